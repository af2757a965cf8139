"""The Open Inference Protocol (KServe's V2 REST API) with Triton's binary tensor and classification
extensions: `datamodels` is the wire format, `codec` turns bodies into tensors and back, `dataplane`
runs the requests on the registry's models through their batchers.
"""
