"""Pixel crack segmentation: mask sets, the decoder's training on cached backbone maps, pixel figures."""
