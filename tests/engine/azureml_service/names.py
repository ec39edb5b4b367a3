"""The fake service's names: one subscription, workspace and region, and the azureml registry."""

SUBSCRIPTION = "00000000-1111-2222-3333-444444444444"
RESOURCE_GROUP = "rg-ml"
WORKSPACE = "ws-finetune"
REGION = "eastus"
ARM = "management.azure.com"
WORKSPACE_ID = (
    f"/subscriptions/{SUBSCRIPTION}/resourceGroups/{RESOURCE_GROUP}"
    f"/providers/Microsoft.MachineLearningServices/workspaces/{WORKSPACE}"
)
REGISTRY = "azureml"
REGISTRY_SUBSCRIPTION = "5f5e0000-0000-4000-8000-00000000a2e1"
REGISTRY_RESOURCE_GROUP = "registry-builtin-prod-eastus-01"
REGISTRY_PATH = (
    f"/subscriptions/{REGISTRY_SUBSCRIPTION}/resourceGroups/{REGISTRY_RESOURCE_GROUP}"
    f"/providers/Microsoft.MachineLearningServices/registries/{REGISTRY}"
)
VM_SIZES = {
    "Standard_NC24ads_A100_v4": 1,
    "Standard_NC48ads_A100_v4": 2,
    "Standard_ND96asr_v4": 8,
    "Standard_NC6s_v3": 1,
    "Standard_NC6": 1,
    "Standard_D13_v2": 0,
}
