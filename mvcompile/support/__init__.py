"""Helpers every layer may import (the bottom of the layer order): atomic writes, interruption, plain names."""
