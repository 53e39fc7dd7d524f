// The whole system for the graphusers function app, at subscription scope:
// a resource group with the identity, storage, Key Vault, monitoring and the
// Flex Consumption function app, plus (optionally) the Entra app registration
// with Microsoft Graph User.Read.All granted.
targetScope = 'subscription'

@minLength(1)
@maxLength(40)
@description('Required. Name of the environment (azd env name); part of every resource name.')
param environmentName string

@minLength(1)
@description('Required. Azure region of every resource; it must offer the Flex Consumption plan.')
param location string

@description('Optional. Object id of the person or pipeline deploying, granted Key Vault Secrets Officer to store the client secret (and Key Vault Certificates Officer with graphCredential certificate). Empty: no grant. azd fills it from AZURE_PRINCIPAL_ID.')
param deployerPrincipalId string = ''

@description('Optional. Create the Entra app registration, its service principal and the User.Read.All grant with the Microsoft Graph Bicep extension (needs Privileged Role Administrator or Global Administrator). False: use graphClientId.')
param createAppRegistration bool = true

@description('Optional. Application (client) id of an existing app registration, used when createAppRegistration is false.')
param graphClientId string = ''

@description('Optional. How the app authenticates to Entra: secret (a client secret in Key Vault), certificate (a Key Vault certificate) or managed-identity-federation (no secret: the app registration trusts the function app identity).')
@allowed(['secret', 'certificate', 'managed-identity-federation'])
param graphCredential string = 'secret'

@description('Optional. Name of the Key Vault certificate, with graphCredential certificate.')
param clientCertificateName string = 'graph-client-certificate'

@description('Optional. Audience of the managed identity token the app presents, with graphCredential managed-identity-federation; change for sovereign clouds.')
param federationAudience string = 'api://AzureADTokenExchange'

// environment() knows the cloud's Entra login endpoint but not Microsoft Graph's, so Graph's is a
// parameter (the linter rule no-hardcoded-env-urls is why neither is written out elsewhere).
// https://learn.microsoft.com/azure/azure-resource-manager/bicep/bicep-functions-deployment#environment
// https://learn.microsoft.com/graph/deployments
@description('Optional. Microsoft Graph endpoint of the cloud: https://graph.microsoft.us (US Government L4), https://dod-graph.microsoft.us (L5), https://microsoftgraph.chinacloudapi.cn (21Vianet).')
param graphEndpoint string = 'https://graph.microsoft.com'

@description('Optional. Name of the Key Vault secret that holds the client secret.')
param clientSecretName string = 'graph-client-secret'

@description('Optional. User properties the API returns and the sync stores.')
param userSelect string = 'id,displayName,userPrincipalName,mail,accountEnabled'

@description('Optional. NCRONTAB schedule of the user sync timer.')
param userSyncSchedule string = '0 */30 * * * *'

@description('Optional. Blob container of the user snapshot.')
param userSyncContainer string = 'user-sync'

@description('Optional. Days between full reconciliation rounds of the user sync (0: never).')
param userSyncFullEvery string = '7'

@description('Optional. How a full round of the user sync reads the tenant: listing (the default) or delta.')
@allowed([
  'listing'
  'delta'
])
param userSyncFullRound string = 'listing'

@description('Optional. E-mail address the sync-staleness and credential-expiry alerts notify; empty: no action group.')
param alertEmail string = ''

@description('Optional. ISO 8601 duration without a successful sync before the staleness alert fires: twice the userSyncSchedule interval.')
param syncStaleAfter string = 'PT1H'

// Zone-redundant storage exists only in regions with availability zones; Standard_LRS works in every
// region. https://learn.microsoft.com/azure/storage/common/redundancy-regions-zrs
@description('Optional. Storage account SKU: Standard_LRS works in every region; Standard_ZRS only in regions with availability zones (see docs/deploy.md).')
@allowed(['Standard_LRS', 'Standard_ZRS', 'Standard_GRS', 'Standard_GZRS', 'Standard_RAGRS', 'Standard_RAGZRS'])
param storageSku string = 'Standard_LRS'

// A purge-protected vault keeps its name for 90 days after deletion, and azd down --purge cannot purge
// it; a new seed gives the next deployment a new vault name. infra/hooks/preprovision.sh sets one when
// the vault this environment last used is soft-deleted.
// https://learn.microsoft.com/azure/key-vault/general/soft-delete-overview#purge-protection
@description('Optional. Any text that changes the Key Vault name; change it to redeploy after the vault was deleted (azd sets GRAPHUSERS_KEY_VAULT_SEED).')
param keyVaultSeed string = ''

@description('Optional. Maximum instances the Flex Consumption plan scales out to.')
@minValue(40)
@maxValue(1000)
param maximumInstanceCount int = 40

@description('Optional. Tags for every resource.')
param tags object = {}

// Private by default, as in the azd Flex Consumption quickstarts (VNET_ENABLED): the app's outbound
// traffic goes through a delegated subnet, storage and Key Vault answer only on private endpoints. False
// keeps the public layout for teams that put networking elsewhere. The app's inbound stays public in both.
@description('Optional. Private layout: a virtual network, the app\'s outbound through it, private endpoints and DNS zones for blob, queue, table and Key Vault, and public network access off on storage and the vault. False: every endpoint public (Entra ID still required). azd sets it from VNET_ENABLED.')
param vnetEnabled bool = true

@description('Optional. Address space of the virtual network (vnetEnabled); change it when it overlaps a network you peer with.')
param vnetAddressPrefix string = '10.0.0.0/16'

@description('Optional. Subnet of the function app\'s outbound traffic, inside vnetAddressPrefix.')
param appSubnetPrefix string = '10.0.1.0/24'

@description('Optional. Subnet of the private endpoints, inside vnetAddressPrefix.')
param endpointSubnetPrefix string = '10.0.2.0/24'

// environment() gives the storage suffix (the blob, queue and table zones are built from it in
// app/network.bicep) and the vault's DNS suffix (.vault.azure.net), whose private zone is vaultcore:
// privatelink.vaultcore.azure.net, .usgovcloudapi.net, .azure.cn. A parameter, derived by default, in
// case a cloud names it differently. https://learn.microsoft.com/azure/private-link/private-endpoint-dns
@description('Optional. Private DNS zone of Key Vault private endpoints in this cloud; the default is derived from environment().suffixes.keyvaultDns.')
param keyVaultDnsZoneName string = 'privatelink.vaultcore${replace(environment().suffixes.keyvaultDns, '.vault.', '.')}'

// One naming scheme: <abbreviation>-<environment>-<token>, or <abbreviation><token> where dashes are not allowed.
var resourceToken = toLower(uniqueString(subscription().id, environmentName, location))
var allTags = union(tags, { 'azd-env-name': environmentName })
var names = {
  resourceGroup: 'rg-${environmentName}'
  identity: 'id-${environmentName}-${resourceToken}'
  storage: 'st${resourceToken}'
  keyVault: 'kv-${empty(keyVaultSeed) ? resourceToken : toLower(uniqueString(resourceToken, keyVaultSeed))}'
  logAnalytics: 'log-${environmentName}-${resourceToken}'
  appInsights: 'appi-${environmentName}-${resourceToken}'
  plan: 'plan-${environmentName}-${resourceToken}'
  functionApp: 'func-${environmentName}-${resourceToken}'
  vnet: 'vnet-${environmentName}-${resourceToken}'
  endpoints: 'pe-${environmentName}-${resourceToken}'
  appRegistration: 'graphusers-${environmentName}-${resourceToken}'
}
// The queue POST /api/sync writes and the queue trigger reads (graphusers/config.py SYNC_QUEUE).
var syncQueueName = 'user-sync-requests'
var deploymentContainerName = 'app-package-${resourceToken}'
// Federation needs no vault: no secret or key exists anywhere.
var useKeyVault = graphCredential != 'managed-identity-federation'

resource rg 'Microsoft.Resources/resourceGroups@2024-03-01' = {
  name: names.resourceGroup
  location: location
  tags: allTags
}

module identity 'app/identity.bicep' = {
  name: 'identity'
  scope: rg
  params: {
    name: names.identity
    location: location
    tags: allTags
  }
}

module storage 'app/storage.bicep' = {
  name: 'storage'
  scope: rg
  params: {
    name: names.storage
    location: location
    tags: allTags
    skuName: storageSku
    deploymentContainerName: deploymentContainerName
    syncContainerName: userSyncContainer
    syncQueueName: syncQueueName
    principalId: identity.outputs.principalId
    vnetEnabled: vnetEnabled
  }
}

module keyVault 'app/key-vault.bicep' = if (useKeyVault) {
  name: 'key-vault'
  scope: rg
  params: {
    name: names.keyVault
    location: location
    tags: allTags
    readerPrincipalId: identity.outputs.principalId
    deployerPrincipalId: deployerPrincipalId
    deployerManagesCertificates: graphCredential == 'certificate'
    vnetEnabled: vnetEnabled
  }
}

module network 'app/network.bicep' = if (vnetEnabled) {
  name: 'network'
  scope: rg
  params: {
    name: names.vnet
    endpointPrefix: names.endpoints
    location: location
    tags: allTags
    addressPrefix: vnetAddressPrefix
    appSubnetPrefix: appSubnetPrefix
    endpointSubnetPrefix: endpointSubnetPrefix
    storageAccountId: storage.outputs.id
    keyVaultId: keyVault.?outputs.id ?? ''
    keyVaultDnsZoneName: keyVaultDnsZoneName
  }
}

module monitoring 'app/monitoring.bicep' = {
  name: 'monitoring'
  scope: rg
  params: {
    logAnalyticsName: names.logAnalytics
    appInsightsName: names.appInsights
    location: location
    tags: allTags
    publisherPrincipalId: identity.outputs.principalId
  }
}

module alerts 'app/alerts.bicep' = {
  name: 'alerts'
  scope: rg
  params: {
    appInsightsName: names.appInsights
    namePrefix: names.functionApp
    location: location
    tags: allTags
    alertEmail: alertEmail
    staleAfter: syncStaleAfter
  }
  dependsOn: [
    monitoring
  ]
}

module appRegistration 'graph/app-registration.bicep' = if (createAppRegistration) {
  name: 'app-registration'
  scope: rg
  params: {
    uniqueName: names.appRegistration
    displayName: 'graphusers (${environmentName})'
    trustedIdentityPrincipalId: (graphCredential == 'managed-identity-federation') ? identity.outputs.principalId : ''
    federationAudience: federationAudience
  }
}

// Change notifications (docs/sync.md) are off until their infra exists; the settings they read, left to the user
// Left to the user: NOTIFICATIONS_ENABLED - off by default; the template does not yet create the key and secret it needs
// Left to the user: NOTIFICATIONS_PUBLIC_URL - defaults to https://WEBSITE_HOSTNAME, the app's own host name in Azure
// Left to the user: WEBSITE_HOSTNAME - App Service sets it to the app's default host name
// Left to the user: NOTIFICATIONS_CLIENT_STATE_SECRET_NAME - the default name suits; the operator creates the random secret
// Left to the user: NOTIFICATIONS_PREVIOUS_CLIENT_STATE_SECRET_NAME - set only during a clientState rotation
// Left to the user: NOTIFICATIONS_FUNCTION_KEY - a Key Vault reference to a named function key, not created yet
// Left to the user: NOTIFICATIONS_MANAGER_SCHEDULE - the code's six-hour default suits every deployment
module functionApp 'app/function-app.bicep' = {
  name: 'function-app'
  scope: rg
  params: {
    name: names.functionApp
    planName: names.plan
    location: location
    tags: allTags
    identityId: identity.outputs.id
    identityClientId: identity.outputs.clientId
    deploymentContainerUrl: '${storage.outputs.blobEndpoint}${deploymentContainerName}'
    maximumInstanceCount: maximumInstanceCount
    appInsightsConnectionString: monitoring.outputs.connectionString
    // Also makes the app wait for the private endpoints and their DNS records (the network module).
    virtualNetworkSubnetId: network.?outputs.appSubnetId ?? ''
    appSettings: {
      GRAPH_TENANT_ID: tenant().tenantId
      // Safe dereference: a module whose condition is false has no outputs (Bicep BCP318).
      // https://learn.microsoft.com/azure/azure-resource-manager/bicep/diagnostics/bcp318
      GRAPH_CLIENT_ID: appRegistration.?outputs.clientId ?? graphClientId
      GRAPH_CREDENTIAL: graphCredential
      KEY_VAULT_URL: keyVault.?outputs.uri ?? ''
      GRAPH_CLIENT_SECRET_NAME: clientSecretName
      GRAPH_CLIENT_CERTIFICATE_NAME: clientCertificateName
      GRAPH_FEDERATION_AUDIENCE: federationAudience
      AUTHORITY_HOST: environment().authentication.loginEndpoint
      GRAPH_ENDPOINT: graphEndpoint
      USER_SELECT: userSelect
      AZURE_CLIENT_ID: identity.outputs.clientId
      USER_SYNC_SCHEDULE: userSyncSchedule
      USER_SYNC_CONTAINER: userSyncContainer
      USER_SYNC_FULL_EVERY: userSyncFullEvery
      USER_SYNC_FULL_ROUND: userSyncFullRound
      HTTP_DEADLINE_SECONDS: '30'
      AzureWebJobsStorage__blobServiceUri: storage.outputs.blobEndpoint
      AzureWebJobsStorage__queueServiceUri: storage.outputs.queueEndpoint
      // The host's diagnostic events go to tables (storage.bicep tableContributor says why).
      AzureWebJobsStorage__tableServiceUri: storage.outputs.tableEndpoint
      AzureWebJobsStorage__credential: 'managedidentity'
      AzureWebJobsStorage__clientId: identity.outputs.clientId
    }
  }
}

// azd stores every output in the environment (.azure/<env>/.env), where the hooks and docs/deploy.md read them.
// https://learn.microsoft.com/azure/developer/azure-developer-cli/manage-environment-variables
@description('The resource group that holds everything.')
output AZURE_RESOURCE_GROUP string = rg.name

@description('Directory (tenant) id the app signs in to (GRAPH_TENANT_ID).')
output AZURE_TENANT_ID string = tenant().tenantId

@description('Name of the function app, for func azure functionapp publish.')
output AZURE_FUNCTION_APP_NAME string = functionApp.outputs.name

@description('Base URL of the HTTP API.')
output SERVICE_API_URI string = functionApp.outputs.uri

@description('Client id of the function app managed identity (AZURE_CLIENT_ID in the app).')
output AZURE_FUNCTION_IDENTITY_CLIENT_ID string = identity.outputs.clientId

@description('Object (principal) id of the function app managed identity: the subject of a federated identity credential, the assignee of roles.')
output AZURE_FUNCTION_IDENTITY_PRINCIPAL_ID string = identity.outputs.principalId

@description('Name of the Key Vault that holds the secret or certificate; empty with managed-identity-federation.')
output AZURE_KEY_VAULT_NAME string = keyVault.?outputs.name ?? ''

@description('URI of the Key Vault (KEY_VAULT_URL); empty with managed-identity-federation.')
output AZURE_KEY_VAULT_URI string = keyVault.?outputs.uri ?? ''

@description('Name of the Key Vault secret the postprovision hook fills with a client secret; empty unless graphCredential is secret.')
output AZURE_KEY_VAULT_SECRET_NAME string = (graphCredential == 'secret') ? clientSecretName : ''

@description('Name of the storage account that holds the snapshot (USER_SYNC_CONTAINER), for readers and operators.')
output AZURE_STORAGE_ACCOUNT_NAME string = storage.outputs.name

// The postprovision hook reads it: with the vault closed it opens it to the deployer's address while
// it writes the secret, and closes it again.
@description('Whether the private layout was deployed (vnetEnabled): storage and Key Vault accept no public traffic.')
output AZURE_VNET_ENABLED bool = vnetEnabled

@description('Application (client) id the app uses.')
output GRAPH_CLIENT_ID string = appRegistration.?outputs.clientId ?? graphClientId
