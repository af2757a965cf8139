"""What each task answers, per image: the values the pipelines return and the JSON carries."""

from __future__ import annotations

from pydantic import BaseModel, Field


class Prediction(BaseModel):
    label: str
    index: int = Field(description="class index in the model's output")
    score: float = Field(description="softmax probability")


class SegmentClass(BaseModel):
    index: int
    label: str
    fraction: float = Field(description="share of the image's pixels assigned to this class")
    color: tuple[int, int, int] | None = Field(None, description="RGB colour of the class in the palette")


class Keypoint(BaseModel):
    name: str
    x: float = Field(description="image pixels, origin at the top-left pixel's centre")
    y: float
    score: float = Field(description="heatmap peak value")


class Person(BaseModel):
    box: tuple[float, float, float, float] = Field(description="x1, y1, x2, y2 in image pixels")
    score: float = Field(description="mean keypoint score")
    box_score: float | None = Field(
        default=None, description="the detector's person score, when it found the box"
    )
    keypoints: list[Keypoint]


class Size(BaseModel):
    width: int
    height: int


class Classification(BaseModel):
    predictions: list[Prediction] = Field(description="the top_k classes, highest score first")
    image: Size = Field(description="size of the upright input image")


class Segmentation(BaseModel):
    image: Size = Field(description="size of the upright input image (and of the mask)")
    classes: list[SegmentClass] = Field(description="classes present, largest first")
    mask_png: str = Field(
        description="base64 of a palette PNG at the image's size whose pixel values are class indices"
    )


class DetectedObject(BaseModel):
    label: str
    index: int = Field(description="class index in the model's output")
    score: float = Field(description="softmax class score")
    box: tuple[float, float, float, float] = Field(description="x1, y1, x2, y2 in image pixels")


class Detections(BaseModel):
    image: Size = Field(description="size of the upright input image")
    objects: list[DetectedObject] = Field(description="highest score first, after per-class NMS")
