"""Shells over the Python API for putting a trained run to use: `app` (the HTTP server, needs the `serve`
extra: fastapi, uvicorn) and `export` (ONNX files that ONNX Runtime runs without seqlab's training code).
Nothing is imported here, so `seqlab.serve.export` does not pull in the web stack."""
