"""What a run measures: accuracy protocols, profiling (parameters, FLOPs, memory, time), numerics, stored
predictions, bootstrap statistics and the environment a figure was measured in. Imports no runner or reporting
module, so a measurement means the same whoever calls it. Kept empty: importing the room imports nothing heavy."""
