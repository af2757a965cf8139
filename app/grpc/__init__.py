"""The Open Inference Protocol over gRPC (`server`), with its messages (`inference_pb2`, generated)."""
