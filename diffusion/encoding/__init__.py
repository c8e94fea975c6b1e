"""Patients <-> tensors: fit on an extract, encode to [patients, channels, time], decode back.

- `layout`: the channels of the tensor and the `Encoded` container;
- `numeric`: one number's transform, scaling, recorded precision, bounds and percentiles;
- `levels`: a temporal number as the patient's level plus each visit's deviation;
- `labels`: binary and categorical channels, decoded with a switching penalty over visits;
- `marginals`: quantile maps, smoothing and spikes that give decoded numbers their real shape;
- `state`: the typed fitted state and decoding parameters, and their JSON form;
- `frames`, `fit_state`: long frames in and out; fitting the state on the training patients;
- `calibration`: decoding parameters chosen on generated patients, a pure step;
- `encoder`: `TrajectoryEncoder`, which composes them.
"""

from diffusion.encoding.encoder import TrajectoryEncoder
from diffusion.encoding.layout import GAP, LENGTH, T0, VALID, Encoded
from diffusion.encoding.state import FORMAT, Decoding

__all__ = ["Encoded", "TrajectoryEncoder", "Decoding", "FORMAT", "VALID", "LENGTH", "GAP", "T0"]
