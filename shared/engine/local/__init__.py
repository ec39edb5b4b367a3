"""The local engine: LoRA fine-tuning with TRL/peft, an MLflow registry and loopback endpoint servers.

Heavy imports (torch, transformers, trl, mlflow) happen inside the functions that need them, never at
module import, so `import function_app` stays light.
"""
