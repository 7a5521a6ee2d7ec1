"""Shared test settings: hypothesis profiles sized for a 2-core CI machine."""

import hypothesis

hypothesis.settings.register_profile("ci", max_examples=25, deadline=None, derandomize=True)
hypothesis.settings.register_profile("dev", max_examples=25, deadline=None)
hypothesis.settings.load_profile("ci")
