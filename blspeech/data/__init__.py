"""Datasets and samplers: speech utterances in frame-budget batches, ImageNet folders."""
