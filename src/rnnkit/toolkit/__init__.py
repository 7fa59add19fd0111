"""The sequence-modelling toolkit: data, models, training, command line."""
