"""seethrough.subnetworks: modules and circuits (survey §4).

`partition` and `clusterability` read the network as a weighted graph of units and cut it into
modules (spectral clustering, n-cut, z-score against weight shuffles); `activation_patching`
measures how much of a clean-to-corrupted change each site, unit or position carries;
`find_circuit` scores the writer → reader edges of a residual stream (exact edge patching, EAP,
EAP-IG, ACDC); `faithfulness` checks a circuit by corrupting everything outside it and
`faithfulness_curve` does so for every circuit size (CPR, CMD).
"""

from .circuits import CIRCUIT_METHODS, Circuit, faithfulness, find_circuit
from .lesions import NOT_SPECIALISED, SPECIALISED, LesionTest, lesion_test
from .modularity import (
                         FUNCTIONAL_METHODS,
                         ModularTraining,
                         UnitGraph,
                         connection_cost,
                         functional_graph,
                         functional_partition,
                         train_modular,
)
from .partition import Clusterability, Partition, clusterability, ncut, partition
from .patching import Patching, activation_patching, attribution_patching
from .sparsity import (
    SPARSITY_METHODS,
    SparsityReport,
    expected_l0,
    hard_concrete_sample,
    sparsity_report,
    train_with_sparsity,
)
from .stability import CircuitStability, circuit_stability, jaccard
from .verification import CircuitSignificance, FaithfulnessCurve, circuit_significance, faithfulness_curve

__all__ = ["partition", "clusterability", "ncut", "Partition", "Clusterability",
           "activation_patching", "Patching",
           "find_circuit", "faithfulness", "Circuit", "CIRCUIT_METHODS",
           "faithfulness_curve", "FaithfulnessCurve", "circuit_significance", "CircuitSignificance"]
__all__ += ["circuit_stability", "CircuitStability", "jaccard"]
__all__ += ["lesion_test", "LesionTest", "SPECIALISED", "NOT_SPECIALISED", "functional_graph", "functional_partition",
            "FUNCTIONAL_METHODS", "UnitGraph", "train_modular", "ModularTraining", "connection_cost"]
__all__ += ["train_with_sparsity", "sparsity_report", "SparsityReport", "SPARSITY_METHODS", "expected_l0",
            "hard_concrete_sample"]
__all__ += ["attribution_patching"]
