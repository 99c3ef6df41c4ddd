"""Training-side data selection: EL2N scores, dynamic pruning, ENT and loss truncation.

Pure torch/numpy, no I/O, so the training worker and the scoring step share it.
"""

from pruning_data.dynamic import DynamicPruner
from pruning_data._ties import tie_key
from pruning_data.el2n import document_stats, el2n, el2n_from_norms
from pruning_data.ent import EntInfo, ent_loss
from pruning_data.error_norm import MAX_ERROR_NORM, error_norm
from pruning_data.loss_truncation import LossTruncation

__all__ = ["DynamicPruner", "EntInfo", "LossTruncation", "MAX_ERROR_NORM", "document_stats", "el2n",
           "el2n_from_norms", "ent_loss", "error_norm", "tie_key"]
