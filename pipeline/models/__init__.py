"""Models: the registry's networks (`networks.py`), the convolution-kernel models (`kernels/`) and their
closed-form ridge head (`ridge.py`), the length rules (`sizing.py`), and `build.py`, which wraps every network
with the input normalisation and the output layer and joins ensemble members. The registry itself (`MODELS`,
torch-free) is in pipeline/settings/config.py."""
