"""`sare serve`: the localiser as a Ray Serve application (loopback by default).

    POST /locate      an image (the request body, or a multipart form field `photo`) -> JSON: the top-k
                      matches (id, path, coordinates, distance) and the position estimate, as `sare locate`
    GET  /            a page where a person uploads a photo and sees its best matches and their positions
    GET  /images?id=  a database image of the index (a JPEG thumbnail), for the page
    GET  /health      {"status": "ok", "model_hash", "index", "count"}

Requests are batched (`serve.batch`: up to `max_batch_size` photos per model pass); each replica holds the
model and the index, and takes a GPU when the cluster has them. Bad uploads get a 4xx with a message and
the service stays up: not an image (415 for another content type, 400 for bytes that do not decode), empty
(400), over `max_upload_bytes` (413).
"""


import io
import logging
from importlib import resources

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse
from ray import serve

log = logging.getLogger(__name__)

app = FastAPI(title="sare localiser")
IMAGE_TYPES = ("image/jpeg", "image/png", "image/webp", "image/bmp", "image/tiff", "image/gif")
PAGE = "page.html"


def decode_upload(body: bytes, content_type: str, max_bytes: int):
    """The uploaded image as RGB, or an HTTPException (4xx) that says what is wrong with the upload."""
    from PIL import Image, UnidentifiedImageError

    kind = (content_type or "").split(";")[0].strip().lower()
    if kind and kind not in IMAGE_TYPES and kind != "application/octet-stream":
        raise HTTPException(415, f"content type {kind!r} is not an image; send one of {', '.join(IMAGE_TYPES)}")
    if not body:
        raise HTTPException(400, "empty upload: send the image's bytes")
    if len(body) > max_bytes:
        raise HTTPException(413, f"upload of {len(body)} bytes is over the limit of {max_bytes} bytes")
    try:
        with Image.open(io.BytesIO(body)) as img:
            img.load()
            return img.convert("RGB")
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise HTTPException(400, f"the upload is not a readable image ({type(exc).__name__})") from None


async def read_upload(request: Request, max_bytes: int) -> tuple[bytes, str]:
    """The image bytes and their content type, from a raw body or a multipart form's `photo` field."""
    content_type = request.headers.get("content-type", "")
    if content_type.startswith("multipart/form-data"):
        form = await request.form()
        upload = form.get("photo")
        if upload is None or not hasattr(upload, "read"):
            raise HTTPException(400, "multipart upload without a file field named 'photo'")
        body = await upload.read(max_bytes + 1)
        return body, upload.content_type or ""
    length = int(request.headers.get("content-length") or 0)
    if length > max_bytes:
        raise HTTPException(413, f"upload of {length} bytes is over the limit of {max_bytes} bytes")
    return await request.body(), content_type


@serve.deployment(name="localizer")
@serve.ingress(app)
class LocalizerDeployment:
    """One replica: the model and the index in memory; photos located in batches."""

    def __init__(self, model: str, index: str, k: int = 10, radius: float = 25.0,
                 max_upload_bytes: int = 10 << 20, max_batch_size: int = 8, search: dict | None = None):
        import torch

        from sare_core.allocator import keep_freed_memory

        from ..locate.locate import Localizer

        keep_freed_memory()  # a long-lived replica: every request batch's forward pass reuses freed memory
        device = "cuda" if torch.cuda.is_available() else "cpu"
        self.localizer = Localizer(model, index, device=device, search=search)
        self.k, self.radius, self.max_upload_bytes = k, radius, max_upload_bytes
        self.known_ids = set(self.localizer.index.ids)
        self.locate_batch.set_max_batch_size(max_batch_size)
        log.info("localizer replica: model %s, index %s (%d images) on %s", self.localizer.model_hash, index,
                 len(self.localizer.index.ids), device)

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.01)
    async def locate_batch(self, images: list) -> list[dict]:
        return self.localizer.locate(images, self.k, self.radius)

    @app.post("/locate")
    async def locate(self, request: Request) -> dict:
        body, content_type = await read_upload(request, self.max_upload_bytes)
        image = decode_upload(body, content_type, self.max_upload_bytes)
        return await self.locate_batch(image)

    @app.get("/images")
    def image(self, id: str):  # noqa: A002 - the query parameter's name
        """A database image of the index, as a JPEG thumbnail (only ids the index holds: no other file)."""
        from fastapi.responses import Response

        from sare_core.evaluation.report import thumbnail_data_uri

        if id not in self.known_ids:
            raise HTTPException(404, f"no image {id!r} in the index")
        uri = thumbnail_data_uri(self.localizer.index.path_of(id) or "", max_side=240)
        if uri is None:
            raise HTTPException(404, f"image {id!r} is in the index but its file cannot be read here")
        import base64

        return Response(base64.b64decode(uri.split(",", 1)[1]), media_type="image/jpeg")

    @app.get("/health")
    def health(self) -> dict:
        return {"status": "ok", "model_hash": self.localizer.model_hash, "index": self.localizer.index.uri,
                "count": len(self.localizer.index.ids)}

    @app.get("/", response_class=HTMLResponse)
    def page(self) -> str:
        return resources.files(__package__).joinpath(PAGE).read_text()
