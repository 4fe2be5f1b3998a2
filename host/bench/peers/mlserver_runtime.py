"""A custom MLServer runtime: an ONNX file served with onnxruntime (see onnx_common.py for the
kinds of model and their processing). Configured by model-settings.json:
``parameters.uri`` is the ONNX file, ``parameters.extra.kind`` the kind."""

from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.types import InferenceRequest, InferenceResponse

from onnx_common import Runner


class OnnxRuntimeModel(MLModel):
    async def load(self) -> bool:
        parameters = self.settings.parameters
        self.runner = Runner(parameters.extra["kind"], parameters.uri)
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        inputs = {i.name: NumpyCodec.decode_input(i) for i in payload.inputs}
        name, output = self.runner(inputs)
        return InferenceResponse(
            model_name=self.name,
            id=payload.id,
            outputs=[NumpyCodec.encode_output(name=name, payload=output)],
        )
