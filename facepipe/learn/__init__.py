"""Learning: the training engine, losses, augmentation, and the train, pseudolabel and distill stages."""
