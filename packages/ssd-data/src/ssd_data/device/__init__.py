"""The device input path: the loader workers hand over JPEG bytes and the sample's decisions;
decoding, crop, flip, resize and colour jitter run batched on the training device."""
