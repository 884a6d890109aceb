"""Features computed by pretrained networks, for heads trained on top of them (face_descriptor: dlib's 128-d)."""
