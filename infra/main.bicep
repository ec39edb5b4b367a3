// ft-autopilot on Azure: a Flex Consumption function app wired to an EXISTING Azure ML workspace.
//
// Scope: subscription. The template creates the app's resource group (rg-<env>) and everything in it, and adds
// a few things to the workspace's resource group (role assignments, a datastore, the workspace's Event Grid
// system topic). The workspace must be in the same subscription.
//
// Event subscriptions are NOT created here: they need the functions' system keys, which exist only after the
// code is deployed. scripts/post-deploy.sh (azd postdeploy hook) creates them.
targetScope = 'subscription'

@minLength(1)
@maxLength(64)
@description('azd environment name; names the resource group and seeds resource names.')
param environmentName string

@minLength(1)
@description('Region of the app (one that offers Flex Consumption).')
param location string

@description('Name of the app resource group; default rg-<environmentName>.')
param resourceGroupName string = ''

@description('Object id of the person running azd (AZURE_PRINCIPAL_ID); gets Storage Blob Data Contributor so they can upload datasets. Empty: none.')
param principalId string = ''

// The existing Azure ML workspace.
@minLength(1)
@description('Name of the existing Azure ML workspace.')
param workspaceName string

@minLength(1)
@description('Resource group of the existing Azure ML workspace.')
param workspaceResourceGroupName string

@description('Name of the Event Grid system topic of the workspace. A workspace can have only one system topic: if it already has one, give its name here. Empty: a new name.')
param workspaceTopicName string = ''

// What the app does with it (app settings; see local.settings.json.example).
@minLength(1)
@description('BASE_MODEL_ID: the registry model to fine-tune, azureml://registries/azureml/models/<name>/versions/<v>.')
param baseModelId string = 'azureml://registries/azureml/models/Phi-4/versions/8'

@description('AZUREML_COMPUTE: a GPU cluster name, or serverless.')
param computeName string = 'serverless'

@description('AZUREML_FINETUNE_INSTANCE_TYPE: the fine-tuning VM size with serverless compute.')
param finetuneInstanceType string = 'Standard_NC24ads_A100_v4'

@description('AZUREML_INFERENCE_INSTANCE_TYPE: the VM size of each online deployment; empty: the cheapest current size in the base model\'s inference list.')
param inferenceInstanceType string = ''

@description('AZUREML_PIPELINE_VERSION: the pinned chat_completion_pipeline component version.')
param pipelineVersion string = '0.0.82'

@description('AZUREML_DATASTORE: the workspace datastore created for the datasets container.')
param datastoreName string = 'ftautopilot'

@description('IDLE_MINUTES: an endpoint idle this long is torn down.')
param idleMinutes string = '60'

@description('IDLE_SWEEP_SCHEDULE: NCRONTAB schedule of the idle sweep; empty: every 15 minutes.')
param idleSweepSchedule string = ''

// The dashboard (/api/ui) in Azure: docs/dashboard-in-azure.md.
@description('DASHBOARD_ENTRA_CLIENT_ID: client id of an Entra app registration; turns on App Service Authentication (Entra ID sign-in) in front of the dashboard and DASHBOARD_TRUST_EASY_AUTH. Empty: off.')
param dashboardEntraClientId string = ''

@description('DASHBOARD_ENTRA_TENANT_ID: tenant of that app registration. Empty: the tenant of this deployment.')
param dashboardEntraTenantId string = ''

@description('DASHBOARD_ENTRA_SECRET_URI: Key Vault secret URI of the app registration\'s client secret. Empty: no secret; the app\'s managed identity signs in through a federated identity credential on the app registration.')
param dashboardEntraSecretUri string = ''

@description('DASHBOARD_KEY_SECRET_URI: Key Vault secret URI of the dashboard key (DASHBOARD_KEY, sent as Authorization: Bearer by scripts). Empty: no DASHBOARD_KEY.')
param dashboardKeySecretUri string = ''

var tags = { 'azd-env-name': environmentName }
var resourceToken = toLower(uniqueString(subscription().id, environmentName, location))
var datasetsContainer = 'datasets'
var runsContainer = 'runs'
var deadLetterContainer = 'deadletter'
var deploymentContainer = 'app-package'
// The default lives here, not in main.parameters.json: azd's ${VAR=default} would have to hold spaces, * and /.
var sweepSchedule = empty(idleSweepSchedule) ? '0 */15 * * * *' : idleSweepSchedule

resource rg 'Microsoft.Resources/resourceGroups@2022-09-01' = {
  name: empty(resourceGroupName) ? 'rg-${environmentName}' : resourceGroupName
  location: location
  tags: tags
}

resource workspaceGroup 'Microsoft.Resources/resourceGroups@2022-09-01' existing = {
  name: workspaceResourceGroupName
}

module identity 'app/identity.bicep' = {
  name: 'identity'
  scope: rg
  params: {
    name: 'id-${resourceToken}'
    location: location
    tags: tags
  }
}

module monitoring 'app/monitoring.bicep' = {
  name: 'monitoring'
  scope: rg
  params: {
    logAnalyticsName: 'log-${resourceToken}'
    appInsightsName: 'appi-${resourceToken}'
    location: location
    tags: tags
  }
}

module storage 'app/storage.bicep' = {
  name: 'storage'
  scope: rg
  params: {
    name: 'st${resourceToken}'
    topicName: 'evgt-st-${resourceToken}'
    location: location
    tags: tags
    containers: [deploymentContainer, datasetsContainer, runsContainer, deadLetterContainer]
  }
}

module workspace 'app/workspace.bicep' = {
  name: 'workspace'
  scope: workspaceGroup
  params: {
    workspaceName: workspaceName
    topicName: empty(workspaceTopicName) ? 'evgt-mlw-${resourceToken}' : workspaceTopicName
    datastoreName: datastoreName
    storageAccountName: storage.outputs.name
    storageResourceGroupName: rg.name
    datasetsContainer: datasetsContainer
    appPrincipalId: identity.outputs.principalId
    tags: tags
  }
}

module rbac 'app/rbac.bicep' = {
  name: 'rbac'
  scope: rg
  params: {
    storageAccountName: storage.outputs.name
    appInsightsName: monitoring.outputs.appInsightsName
    appPrincipalId: identity.outputs.principalId
    workspacePrincipalId: workspace.outputs.principalId
    userPrincipalId: principalId
    deadLetterContainer: deadLetterContainer
    storageTopicPrincipalId: storage.outputs.topicPrincipalId
    workspaceTopicPrincipalId: workspace.outputs.topicPrincipalId
  }
}

module functionApp 'app/function.bicep' = {
  name: 'function'
  scope: rg
  params: {
    name: 'func-${resourceToken}'
    planName: 'plan-${resourceToken}'
    location: location
    tags: union(tags, { 'azd-service-name': 'autopilot' })
    identityId: identity.outputs.id
    identityClientId: identity.outputs.clientId
    storageAccountName: storage.outputs.name
    deploymentContainer: deploymentContainer
    appInsightsConnectionString: monitoring.outputs.connectionString
    authClientId: dashboardEntraClientId
    authTenantId: dashboardEntraTenantId
    authClientSecretUri: dashboardEntraSecretUri
    appSettings: {
      AUTOPILOT_ENGINE: 'azureml'
      AZURE_SUBSCRIPTION_ID: subscription().subscriptionId
      AZURE_RESOURCE_GROUP: workspaceResourceGroupName
      AZUREML_WORKSPACE_NAME: workspaceName
      AZUREML_COMPUTE: computeName
      AZUREML_FINETUNE_INSTANCE_TYPE: finetuneInstanceType
      AZUREML_DATASTORE: datastoreName
      AZUREML_PIPELINE_VERSION: pipelineVersion
      // Empty: the app picks the cheapest current size in the base model's inference list.
      AZUREML_INFERENCE_INSTANCE_TYPE: inferenceInstanceType
      BASE_MODEL_ID: baseModelId
      DATASETS_CONTAINER: datasetsContainer
      RUNS_CONTAINER: runsContainer
      // Azure's pipeline does not evaluate the base model, so the gate cannot require it.
      GATE_REQUIRE_BASE_EVAL: 'false'
      IDLE_MINUTES: idleMinutes
      IDLE_SWEEP_SCHEDULE: sweepSchedule
      // Trust the X-MS-CLIENT-PRINCIPAL* headers only where App Service Authentication is on: it strips forged ones.
      DASHBOARD_TRUST_EASY_AUTH: empty(dashboardEntraClientId) ? 'false' : 'true'
      // A Key Vault reference, never the key itself (the app's identity needs Key Vault Secrets User on the vault).
      // Empty: no key (the app reads an empty setting as unset).
      DASHBOARD_KEY: empty(dashboardKeySecretUri) ? '' : '@Microsoft.KeyVault(SecretUri=${dashboardKeySecretUri})'
    }
  }
  // The app's identity must be able to read the deployment container and the host storage when it starts.
  dependsOn: [rbac]
}

// Read by scripts/post-deploy.sh through `azd env get-values`.
output AZURE_LOCATION string = location
output AZURE_RESOURCE_GROUP string = rg.name
output AZURE_FUNCTION_APP_NAME string = functionApp.outputs.name
output AZURE_FUNCTION_APP_HOSTNAME string = functionApp.outputs.defaultHostName
// For the dashboard's app registration (docs/dashboard-in-azure.md): its redirect URI, and the subject of its
// federated identity credential (the app's user-assigned identity).
output DASHBOARD_URL string = 'https://${functionApp.outputs.defaultHostName}/api/ui'
output DASHBOARD_ENTRA_REDIRECT_URI string = 'https://${functionApp.outputs.defaultHostName}/.auth/login/aad/callback'
output AZURE_APP_IDENTITY_PRINCIPAL_ID string = identity.outputs.principalId
output AZURE_APP_IDENTITY_CLIENT_ID string = identity.outputs.clientId
output STORAGE_ACCOUNT_NAME string = storage.outputs.name
output STORAGE_ACCOUNT_ID string = storage.outputs.id
output STORAGE_TOPIC_NAME string = storage.outputs.topicName
output DATASETS_CONTAINER string = datasetsContainer
output DEADLETTER_CONTAINER string = deadLetterContainer
output WORKSPACE_RESOURCE_GROUP string = workspaceResourceGroupName
output WORKSPACE_ID string = workspace.outputs.id
output WORKSPACE_TOPIC_NAME string = workspace.outputs.topicName
