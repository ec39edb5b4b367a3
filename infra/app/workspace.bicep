// What the app needs in the EXISTING Azure ML workspace's resource group: roles for the app's identity,
// an identity-based datastore on the app's datasets container, and the workspace's Event Grid system topic
// (its subscription to on_job_event is created by scripts/post-deploy.sh). The topic has a system-assigned
// identity for dead-lettering; its role on the dead-letter container is assigned in the app's resource group,
// where the container is (rbac.bicep).
param workspaceName string
param topicName string
param datastoreName string
param storageAccountName string
param storageResourceGroupName string
param datasetsContainer string
param appPrincipalId string
param tags object = {}

var azureMLDataScientist = 'f6c7c914-8db3-469d-8ca1-694a8f32e121'
var monitoringReader = '43d0d8ad-25c7-4714-9337-8ba259a9fe05'

resource workspace 'Microsoft.MachineLearningServices/workspaces@2024-04-01' existing = {
  name: workspaceName
}

// Submit and cancel jobs, register models, create and delete online endpoints and deployments.
resource dataScientist 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(workspace.id, appPrincipalId, azureMLDataScientist)
  scope: workspace
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', azureMLDataScientist)
    principalId: appPrincipalId
    principalType: 'ServicePrincipal'
  }
}

// Read the endpoints' request metrics (idle detection). Endpoints live in this resource group.
resource metricsReader 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(resourceGroup().id, appPrincipalId, monitoringReader)
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', monitoringReader)
    principalId: appPrincipalId
    principalType: 'ServicePrincipal'
  }
}

// No credentials: jobs read with an identity (the submitter's on serverless compute, which is the app's;
// the workspace's own identity for the studio). Both have a blob role on the account (rbac.bicep).
resource datastore 'Microsoft.MachineLearningServices/workspaces/datastores@2024-04-01' = {
  parent: workspace
  name: datastoreName
  properties: {
    datastoreType: 'AzureBlob'
    accountName: storageAccountName
    containerName: datasetsContainer
    endpoint: environment().suffixes.storage
    protocol: 'https'
    subscriptionId: subscription().subscriptionId
    resourceGroup: storageResourceGroupName
    credentials: {
      credentialsType: 'None'
    }
    serviceDataAccessAuthIdentity: 'WorkspaceSystemAssignedIdentity'
    description: 'ft-autopilot datasets and prepared splits'
  }
}

resource topic 'Microsoft.EventGrid/systemTopics@2022-06-15' = {
  name: topicName
  location: workspace.location
  tags: tags
  identity: {
    type: 'SystemAssigned'
  }
  properties: {
    source: workspace.id
    topicType: 'Microsoft.MachineLearningServices.Workspaces'
  }
}

// The workspace must have a system-assigned identity (the default for new workspaces).
output principalId string = workspace.identity.principalId
output id string = workspace.id
output topicName string = topic.name
output topicPrincipalId string = topic.identity.principalId
