"""The enforcement Lambda function (handler, wiring)."""
