"""Unicode emoji (image + text, 9 groups), built offline: the paper's image-text setting in small.

Images (32 x 32 renders) go through a narrow ResNet18 trained from scratch, names
through all-MiniLM-L6-v2 (a 6-layer BERT) fine-tuned from its checkpoint; as in
the paper's image-text datasets, Adam is the optimizer.

  python -m mie_jax.data.emoji data/emoji        # once; needs apt-get install unicode-data fonts-noto-color-emoji
  python -m experiments.run --dataset emoji --data-dir data/emoji
"""


def get_config() -> dict:
    return {
        "modalities": ("image", "text"),
        "model": {"encoder": {"image": "resnet18", "text": "bert"}, "resnet_width": 16},
        "train": {"outer_iterations": 3, "phase_epochs": 2, "batch_size": 32, "selection_metric": "macro_f1"},
        # The paper fine-tunes BERT with Adam at 1e-5; the ResNet here starts from
        # scratch, so one learning rate between the two serves both.
        "optimizer": {"name": "adam", "learning_rate": 1e-4, "weight_decay": 0.0},
    }
