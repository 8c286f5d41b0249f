"""Offline bulk jobs: `qwen3-serve encode` and `qwen3-serve score` as Ray Data pipelines on the
same engines (and so the same prompts and numbers) as the API."""
