"""UCI Multiple Features (mfeat), shipped with the package: the default dataset.

A strong and a weak view of the same digits (fac: profile correlations, about
0.97 accuracy alone; mor: six morphological features, about 0.74), so the
imbalance MIE addresses is built in. Other pairs: ``--set modalities=pix,fou``;
three views: ``--set modalities=fac,mor,zer``.

Everything else is the defaults: MLP encoders (256 hidden) to ``Dim`` 128, the
paper's MIE values (covariance batch 12, tau 0.4), SGD at 1e-2 with momentum
0.9 and weight decay 1e-4, 4 outer iterations of 3 epochs per phase. Feature
vectors are not images: the paper's rho of 1e-15..1e-10 would be a no-op in
float32, so SAM keeps its default radius 0.05.

  python -m experiments.run --dataset mfeat --method mie
"""


def get_config() -> dict:
    return {"modalities": ("fac", "mor")}
