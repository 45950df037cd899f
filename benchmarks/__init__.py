"""torchgrow benchmarks: reproduction and speed scripts writing JSON + Markdown results."""
