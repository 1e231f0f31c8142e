"""Data in: MNIST fetched with verified checksums and loaded as tensors (mnist), user images and masks decoded
with clear errors (images)."""
