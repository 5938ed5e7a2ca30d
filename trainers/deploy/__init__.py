"""Deployment: portable model folders, ONNX export with parity checks, ONNX Runtime sessions, int8."""
