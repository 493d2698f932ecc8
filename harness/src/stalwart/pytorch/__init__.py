"""``stalwart.pytorch``: a small PyTorch training loop on the Core API that resumes exactly.

Importing it imports torch; ``import stalwart`` and ``stalwart.core`` do not.

Example::

    import stalwart.core
    import stalwart.pytorch

    with stalwart.core.init() as core_context:
        trainer = stalwart.pytorch.Trainer(
            core_context, model, optimizer, train_loader, val_data=val_loader, loss_fn=loss_fn
        )
        trainer.fit(max_length=stalwart.pytorch.Epoch(10))
"""

from stalwart.pytorch._policy import Batch, Epoch, Policy, TrainerError
from stalwart.pytorch._state import seed_all
from stalwart.pytorch._trainer import FitResult, Trainer

__all__ = ["Batch", "Epoch", "FitResult", "Policy", "Trainer", "TrainerError", "seed_all"]
