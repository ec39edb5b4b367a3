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

// App Service Authentication ("Easy Auth") with Microsoft Entra ID in front of the dashboard (docs/dashboard-in-azure.md).
@description('Client (application) id of the Entra app registration that signs users in to the dashboard. Empty: App Service Authentication off.')
param authClientId string = ''

@description('Tenant of that app registration. Empty: the deployment\'s tenant.')
param authTenantId string = ''

@description('Key Vault secret URI of the app registration\'s client secret. Empty: no secret; the app\'s managed identity is the credential (a federated identity credential on the app registration).')
param authClientSecretUri string = ''

var authEnabled = !empty(authClientId)
var authTenant = empty(authTenantId) ? tenant().tenantId : authTenantId
// The NAME of the app setting that holds the credential, not a value. OVERRIDE_USE_MI_FIC_ASSERTION_CLIENTID is the
// platform's name for "use this user-assigned identity's token as the client assertion" (preview): no secret at all.
var authSecretSettingName = empty(authClientSecretUri) ? 'OVERRIDE_USE_MI_FIC_ASSERTION_CLIENTID' : 'MICROSOFT_PROVIDER_AUTHENTICATION_SECRET'
var authCredentialSetting = empty(authClientSecretUri) ? {
  OVERRIDE_USE_MI_FIC_ASSERTION_CLIENTID: identityClientId
} : {
  MICROSOFT_PROVIDER_AUTHENTICATION_SECRET: '@Microsoft.KeyVault(SecretUri=${authClientSecretUri})'
}
var authAppSettings = authEnabled ? union(authCredentialSetting, { WEBSITE_AUTH_AAD_ALLOWED_TENANTS: authTenant }) : {}

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
    // Key Vault references in app settings (@Microsoft.KeyVault(...)) resolve with the user-assigned identity.
    keyVaultReferenceIdentity: identityId
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
  // This PUT replaces ALL app settings: a setting added by hand (az functionapp config appsettings set) is gone after
  // the next `azd provision`. Secrets therefore come in as Key Vault references through the parameters.
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
    }, authAppSettings)
  }

  // App Service Authentication. Always declared, so that the template owns it: off unless authClientId is given.
  // When on, it signs users in and injects X-MS-CLIENT-PRINCIPAL* headers, but lets every request through
  // (AllowAnonymous): Event Grid, the blob trigger's webhook and scripts reach the other routes with function keys,
  // and the dashboard refuses unauthenticated requests itself.
  resource auth 'config' = {
    name: 'authsettingsV2'
    properties: authEnabled ? {
      platform: {
        enabled: true
      }
      globalValidation: {
        requireAuthentication: false
        unauthenticatedClientAction: 'AllowAnonymous'
      }
      httpSettings: {
        requireHttps: true
      }
      identityProviders: {
        azureActiveDirectory: {
          enabled: true
          registration: {
            openIdIssuer: '${environment().authentication.loginEndpoint}${authTenant}/v2.0'
            clientId: authClientId
            clientSecretSettingName: authSecretSettingName
          }
          validation: {
            allowedAudiences: ['api://${authClientId}']
          }
        }
      }
      login: {
        tokenStore: {
          enabled: true
        }
      }
    } : {
      platform: {
        enabled: false
      }
    }
    // The credential setting it names must exist first.
    dependsOn: [settings]
  }
}

output name string = site.name
output defaultHostName string = site.properties.defaultHostName
