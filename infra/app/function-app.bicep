// The function app on the Flex Consumption plan: Python 3.13, the user-assigned identity for
// everything (deployment package, host storage, Key Vault, telemetry), no publishing credentials.

@description('Required. Function app name.')
param name string

@description('Required. Flex Consumption plan name.')
param planName string

@description('Required. Azure region.')
param location string

@description('Optional. Tags.')
param tags object = {}

@description('Required. Resource id of the user-assigned identity.')
param identityId string

@description('Required. Client id of the user-assigned identity.')
param identityClientId string

@description('Required. URL of the blob container that holds the deployment package.')
param deploymentContainerUrl string

@description('Optional. Maximum instances to scale out to.')
param maximumInstanceCount int = 40

@description('Optional. Memory of each instance in MB.')
@allowed([512, 2048, 4096])
param instanceMemoryMB int = 2048

@description('Optional. Zone-redundant plan, in regions that support it for Flex Consumption; the platform then keeps at least two always-ready instances, billed around the clock.')
param zoneRedundant bool = false

@description('Required. Application Insights connection string.')
param appInsightsConnectionString string

@description('Required. The app settings graphusers reads (no secrets: the client secret stays in Key Vault).')
param appSettings object

@description('Optional. Resource id of the subnet (delegated to Microsoft.App/environments) that carries the app\'s outbound traffic into the virtual network; empty: no VNet integration (main.bicep vnetEnabled false).')
param virtualNetworkSubnetId string = ''

resource plan 'Microsoft.Web/serverfarms@2024-04-01' = {
  name: planName
  location: location
  tags: tags
  kind: 'functionapp'
  sku: {
    tier: 'FlexConsumption'
    name: 'FC1'
  }
  properties: {
    // checkov:skip=CKV_AZURE_225:Zone redundancy on Flex Consumption bills two always-ready instances around the clock and exists only in some regions; it is the zoneRedundant parameter, off by default for a daemon that may scale to zero.
    reserved: true
    zoneRedundant: zoneRedundant
  }
}

var platformSettings = {
  APPLICATIONINSIGHTS_CONNECTION_STRING: appInsightsConnectionString
  // Entra ID authentication for telemetry, since the component has local auth disabled.
  APPLICATIONINSIGHTS_AUTHENTICATION_STRING: 'ClientId=${identityClientId};Authorization=AAD'
}

resource site 'Microsoft.Web/sites@2024-04-01' = {
  name: name
  location: location
  tags: union(tags, { 'azd-service-name': 'api' })
  kind: 'functionapp,linux'
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: {
      '${identityId}': {}
    }
  }
  properties: {
    // checkov:skip=CKV_AZURE_222:Inbound stays public in both layouts (vnetEnabled or not): callers reach the API over the internet with function keys, and Graph change notifications need a public endpoint; only outbound traffic enters the VNet.
    // checkov:skip=CKV_AZURE_17:Client certificates would require every caller of the API to hold one; callers authenticate with function keys over TLS 1.2.
    // checkov:skip=CKV_AZURE_212:Flex Consumption scales to zero by design; always-ready instances would be billed for a daemon that runs every 30 minutes.
    // checkov:skip=CKV_AZURE_213:The Flex Consumption plan does not support the App Service health check; GET /api/health serves external probes.
    serverFarmId: plan.id
    // Outbound through the VNet (private endpoints of storage and Key Vault); null leaves it off.
    virtualNetworkSubnetId: empty(virtualNetworkSubnetId) ? null : virtualNetworkSubnetId
    httpsOnly: true
    publicNetworkAccess: 'Enabled'
    clientCertEnabled: false
    functionAppConfig: {
      deployment: {
        storage: {
          type: 'blobContainer'
          value: deploymentContainerUrl
          authentication: {
            type: 'UserAssignedIdentity'
            userAssignedIdentityResourceId: identityId
          }
        }
      }
      scaleAndConcurrency: {
        maximumInstanceCount: maximumInstanceCount
        instanceMemoryMB: instanceMemoryMB
      }
      runtime: {
        name: 'python'
        version: '3.13'
      }
    }
    siteConfig: {
      minTlsVersion: '1.2'
      scmMinTlsVersion: '1.2'
      ftpsState: 'Disabled'
      http20Enabled: true
      appSettings: [for setting in items(union(appSettings, platformSettings)): {
        name: setting.key
        value: setting.value
      }]
    }
  }
}

// Basic (username and password) publishing credentials off for FTP and the SCM site:
// deployments use Entra ID (func/azd with the deployer's identity).
resource ftp 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2024-04-01' = {
  parent: site
  name: 'ftp'
  properties: {
    allow: false
  }
}

resource scm 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2024-04-01' = {
  parent: site
  name: 'scm'
  properties: {
    allow: false
  }
}

@description('Name of the function app.')
output name string = site.name

@description('Base URL of the app.')
output uri string = 'https://${site.properties.defaultHostName}'
