# The liveness image: every service (ingest, face-worker, eye-worker, fusion) is one
# `liveness COMMAND` on it. Wheels only for the native parts (dlib-bin, opencv headless,
# onnxruntime), so no compiler; the ONNX models are package data of `liveness.models`, all under
# licences that allow commercial use. The eye model is not (NUAA, research use): an eye worker
# mounts one and names it in eye_worker.model (models/artifacts/eye.md).
FROM python:3.11-slim AS build
WORKDIR /src
COPY . .
RUN pip wheel --no-deps --wheel-dir /wheels .

FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
COPY --from=build /wheels /wheels
RUN pip install --prefer-binary /wheels/*.whl \
 && rm -rf /wheels \
 && python -c "from liveness.defaults import artifact_path; assert all(artifact_path(m).is_file() for m in ('blazeface_short_range.onnx', 'face_mesh.onnx', 'face.onnx')), 'no ONNX model'; assert not artifact_path('eye.onnx').exists(), 'eye.onnx is research use only'" \
 && useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin liveness
USER 10001
WORKDIR /tmp
EXPOSE 9400
ENTRYPOINT ["liveness"]
CMD ["--help"]
