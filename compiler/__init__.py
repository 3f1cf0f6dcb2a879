"""distillc: compile a task spec into a distilled student model and an inference package."""

__version__ = "0.1.0"
