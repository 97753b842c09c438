"""rul: deep-learning remaining-useful-life forecasts for predictive maintenance.

The core package: the data shape, loaders and validation, the fleet simulator, the one
preprocessing definition, windowing, targets and metrics. It never imports torch, so a
plant-side server needs only numpy, pandas and onnxruntime.
"""

__version__ = "0.1.0"
