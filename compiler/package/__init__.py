"""What a package is made from besides the model: rendered templates and the runtime's locked dependencies."""
