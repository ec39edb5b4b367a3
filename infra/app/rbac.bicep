// Role assignments in the app's resource group. Names are guid(scope, principal, role), so re-running the
// deployment finds the same assignments instead of adding new ones.
param storageAccountName string
param appInsightsName string

@description('The app\'s user-assigned identity.')
param appPrincipalId string

@description('The Azure ML workspace\'s system-assigned identity.')
param workspacePrincipalId string

@description('The person running azd; empty for none.')
param userPrincipalId string = ''

@description('The container Event Grid dead-letters to.')
param deadLetterContainer string

@description('The system-assigned identity of the storage account\'s Event Grid system topic.')
param storageTopicPrincipalId string

@description('The system-assigned identity of the workspace\'s Event Grid system topic (in the workspace\'s resource group).')
param workspaceTopicPrincipalId string

var storageBlobDataOwner = 'b7e6dc6d-f1e8-4753-8033-0f276bb0955b'
var storageQueueDataContributor = '974c5e8b-45b9-4653-ba55-5f855dd0fb88'
var storageTableDataContributor = '0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3'
var storageBlobDataContributor = 'ba92f5b4-2d11-453d-a403-e96b0029c9fe'
var storageBlobDataReader = '2a2b9908-6ea1-4ae2-8e65-a410df84e7d1'
var monitoringMetricsPublisher = '3913510d-42f4-4e42-8a64-420c390055eb'

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName
}

resource appInsights 'Microsoft.Insights/components@2020-02-02' existing = {
  name: appInsightsName
}

resource blobService 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' existing = {
  parent: storage
  name: 'default'
}

resource deadLetter 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' existing = {
  parent: blobService
  name: deadLetterContainer
}

// The app: blobs (datasets, runs, deployment package, blob trigger), queues (blob trigger poison messages,
// host) and tables (host).
resource appStorageRoles 'Microsoft.Authorization/roleAssignments@2022-04-01' = [
  for roleId in [storageBlobDataOwner, storageQueueDataContributor, storageTableDataContributor]: {
    name: guid(storage.id, appPrincipalId, roleId)
    scope: storage
    properties: {
      roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roleId)
      principalId: appPrincipalId
      principalType: 'ServicePrincipal'
    }
  }
]

// The app sends telemetry with Entra ID auth.
resource appMetricsPublisher 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(appInsights.id, appPrincipalId, monitoringMetricsPublisher)
  scope: appInsights
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', monitoringMetricsPublisher)
    principalId: appPrincipalId
    principalType: 'ServicePrincipal'
  }
}

// The workspace reads the prepared splits through the identity-based datastore.
resource workspaceBlobReader 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(storage.id, workspacePrincipalId, storageBlobDataReader)
  scope: storage
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', storageBlobDataReader)
    principalId: workspacePrincipalId
    principalType: 'ServicePrincipal'
  }
}

// The person running azd can upload datasets (shared keys are off, so `az storage blob upload --auth-mode login`).
resource userBlobContributor 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (!empty(userPrincipalId)) {
  name: guid(storage.id, userPrincipalId, storageBlobDataContributor)
  scope: storage
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', storageBlobDataContributor)
    principalId: userPrincipalId
  }
}

// Event Grid dead-letters undeliverable events with each topic's own identity (the account takes no shared keys):
// Storage Blob Data Contributor on the dead-letter container only. The workspace's topic lives in another resource
// group, so its assignment is made here, beside the container, with the principal id passed in.
resource storageTopicDeadLetterWriter 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(deadLetter.id, storageTopicPrincipalId, storageBlobDataContributor)
  scope: deadLetter
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', storageBlobDataContributor)
    principalId: storageTopicPrincipalId
    principalType: 'ServicePrincipal'
  }
}

resource workspaceTopicDeadLetterWriter 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(deadLetter.id, workspaceTopicPrincipalId, storageBlobDataContributor)
  scope: deadLetter
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', storageBlobDataContributor)
    principalId: workspaceTopicPrincipalId
    principalType: 'ServicePrincipal'
  }
}
