"""How an RGB crop becomes network input: ImageNet statistics on 0..255 values, and the luma weights
that grayscale uses. One place, so the cache reader, augmentation and the gray branch's router agree."""
import numpy as np

MEAN = np.array([0.485, 0.456, 0.406], np.float32) * 255
STD = np.array([0.229, 0.224, 0.225], np.float32) * 255
LUMA = (0.299, 0.587, 0.114)  # ITU-R 601, as paste.to_gray and augment's grayscale
