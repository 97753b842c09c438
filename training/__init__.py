"""Training side of rul: Lightning DataModule and LightningModule, backbones, losses, commands.

Imports torch and pytorch-lightning; the serving side never imports this package.
"""
