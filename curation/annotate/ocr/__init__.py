"""OCR engines behind one interface: a batch of image bytes in, per image lines (box, text,
confidence) or an error with a reason code out.

- `records`: the lines, results, errors and reading order; `images`: bytes -> the array an engine reads;
- `batched`: what every engine shares; one module per engine: `paddle` (PaddleOCR, the default),
  `rapid` (RapidOCR), `tesseract`;
- `routed`: the engine a recipe builds (`build_ocr_engine`), routing by script.
"""
