// The function app on a Flex Consumption plan. It runs as the user-assigned identity and reaches every
// resource with it: no connection strings, no keys in app settings.
param name string
param planName string
param location string
param tags object = {}
param identityId string
param identityClientId string
param storageAccountName string
param deploymentContainer string
param appInsightsConnectionString string

@description('The app\'s own settings (shared/settings.py); merged with the host and identity settings below.')
param appSettings object

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName
}

resource plan 'Microsoft.Web/serverfarms@2024-04-01' = {
  name: planName
  location: location
  tags: tags
  kind: 'functionapp'
  sku: {
    name: 'FC1'
    tier: 'FlexConsumption'
  }
  properties: {
    reserved: true
  }
}

resource site 'Microsoft.Web/sites@2024-04-01' = {
  name: name
  location: location
  tags: tags
  kind: 'functionapp,linux'
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: { '${identityId}': {} }
  }
  properties: {
    serverFarmId: plan.id
    httpsOnly: true
    siteConfig: {
      minTlsVersion: '1.2'
    }
    functionAppConfig: {
      deployment: {
        storage: {
          type: 'blobContainer'
          value: '${storage.properties.primaryEndpoints.blob}${deploymentContainer}'
          authentication: {
            type: 'UserAssignedIdentity'
            userAssignedIdentityResourceId: identityId
          }
        }
      }
      scaleAndConcurrency: {
        maximumInstanceCount: 100
        instanceMemoryMB: 2048
      }
      runtime: {
        name: 'python'
        version: '3.11'
      }
    }
  }

  // FUNCTIONS_WORKER_RUNTIME and FUNCTIONS_EXTENSION_VERSION are not allowed on Flex: the runtime is set above.
  resource settings 'config' = {
    name: 'appsettings'
    properties: union(appSettings, {
      // Host storage (leases, timer locks, blob trigger bookkeeping), through the managed identity.
      AzureWebJobsStorage__accountName: storage.name
      AzureWebJobsStorage__credential: 'managedidentity'
      AzureWebJobsStorage__clientId: identityClientId
      // The blob trigger's connection (Event Grid source): blob for the data, queue for poison messages.
      DatasetStorage__blobServiceUri: storage.properties.primaryEndpoints.blob
      DatasetStorage__queueServiceUri: storage.properties.primaryEndpoints.queue
      DatasetStorage__credential: 'managedidentity'
      DatasetStorage__clientId: identityClientId
      // Telemetry with Entra ID auth (App Insights local auth is off).
      APPLICATIONINSIGHTS_CONNECTION_STRING: appInsightsConnectionString
      APPLICATIONINSIGHTS_AUTHENTICATION_STRING: 'ClientId=${identityClientId};Authorization=AAD'
      // DefaultAzureCredential (Azure ML, metrics) picks the user-assigned identity with this.
      AZURE_CLIENT_ID: identityClientId
    })
  }
}

output name string = site.name
output defaultHostName string = site.properties.defaultHostName
