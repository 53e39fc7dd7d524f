// Storage for the Functions host, the deployment package and the user snapshot, reached only with Entra ID,
// and with vnetEnabled only through the private endpoints of app/network.bicep.

@description('Required. Storage account name (3-24 lowercase letters and digits).')
param name string

@description('Required. Azure region.')
param location string

@description('Optional. Tags.')
param tags object = {}

@description('Optional. SKU: Standard_LRS works in every region; Standard_ZRS and Standard_GZRS only in regions with availability zones.')
@allowed(['Standard_LRS', 'Standard_ZRS', 'Standard_GRS', 'Standard_GZRS', 'Standard_RAGRS', 'Standard_RAGZRS'])
param skuName string = 'Standard_LRS'

@description('Required. Container for the Flex Consumption deployment package.')
param deploymentContainerName string

@description('Required. Container for the user snapshot (USER_SYNC_CONTAINER).')
param syncContainerName string

@description('Required. Queue of on-demand sync requests.')
param syncQueueName string

@description('Required. Principal id of the function app identity.')
param principalId string

@description('Optional. Private layout (main.bicep vnetEnabled): public network access off, reached through private endpoints only. False: the public endpoint, open to any network, Entra ID still required.')
param vnetEnabled bool = true

resource account 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  name: name
  location: location
  tags: tags
  kind: 'StorageV2'
  sku: {
    name: skuName
  }
  properties: {
    // checkov:skip=CKV_AZURE_35:defaultAction is Deny when vnetEnabled is true (the default) and Allow when false (no VNet: the app has no fixed outbound address to allow); checkov cannot evaluate the vnetEnabled condition, and tests/unit/test_templates.py checks both layouts.
    // checkov:skip=CKV_AZURE_206:Redundancy is the skuName parameter: LRS by default because ZRS fails in regions without availability zones; the snapshot can be rebuilt from Graph.
    accessTier: 'Hot'
    allowBlobPublicAccess: false
    allowSharedKeyAccess: false
    defaultToOAuthAuthentication: true
    minimumTlsVersion: 'TLS1_2'
    supportsHttpsTrafficOnly: true
    // Private layout: no public endpoint at all. Public layout: open to any network (Flex Consumption
    // has no fixed outbound addresses to allow), Entra ID required (shared keys are off).
    publicNetworkAccess: vnetEnabled ? 'Disabled' : 'Enabled'
    networkAcls: {
      bypass: 'AzureServices'
      defaultAction: vnetEnabled ? 'Deny' : 'Allow'
      // None, so that each deployment also removes a rule left by a temporary opening (docs/deploy.md).
      ipRules: []
    }
  }
}

resource blobs 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' = {
  parent: account
  name: 'default'
  properties: {
    deleteRetentionPolicy: {
      enabled: true
      days: 7
    }
  }
}

resource deploymentContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: blobs
  name: deploymentContainerName
  properties: {
    publicAccess: 'None'
  }
}

resource syncContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: blobs
  name: syncContainerName
  properties: {
    publicAccess: 'None'
  }
}

resource queues 'Microsoft.Storage/storageAccounts/queueServices@2023-05-01' = {
  parent: account
  name: 'default'
}

resource syncQueue 'Microsoft.Storage/storageAccounts/queueServices/queues@2023-05-01' = {
  parent: queues
  name: syncQueueName
}

// After maxDequeueCount (5) failed attempts the host moves a message to <queue>-poison, creating
// that queue if it is missing; declared here so the role below can be scoped to it.
// https://learn.microsoft.com/azure/azure-functions/functions-bindings-storage-queue-trigger#poison-messages
resource poisonQueue 'Microsoft.Storage/storageAccounts/queueServices/queues@2023-05-01' = {
  parent: queues
  name: '${syncQueueName}-poison'
}

// Storage Blob Data Owner on the account: the Functions host keeps its leases and
// keys in containers it creates itself (azure-webjobs-*), so no narrower scope works.
// https://learn.microsoft.com/azure/azure-functions/functions-reference#connecting-to-host-storage-with-an-identity
resource blobOwner 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(account.id, principalId, 'b7e6dc6d-f1e8-4753-8033-0f276bb0955b')
  scope: account
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', 'b7e6dc6d-f1e8-4753-8033-0f276bb0955b')
    principalId: principalId
    principalType: 'ServicePrincipal'
  }
}

// Storage Queue Data Contributor on the sync queue: the output binding sends, the trigger reads and deletes.
// https://learn.microsoft.com/azure/azure-functions/functions-bindings-storage-queue#grant-permission-to-the-identity
resource queueContributor 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(syncQueue.id, principalId, '974c5e8b-45b9-4653-ba55-5f855dd0fb88')
  scope: syncQueue
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', '974c5e8b-45b9-4653-ba55-5f855dd0fb88')
    principalId: principalId
    principalType: 'ServicePrincipal'
  }
}

// Storage Queue Data Contributor on the poison queue too: without it the host cannot move a message
// that failed five times, and the message keeps coming back.
resource poisonQueueContributor 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(poisonQueue.id, principalId, '974c5e8b-45b9-4653-ba55-5f855dd0fb88')
  scope: poisonQueue
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', '974c5e8b-45b9-4653-ba55-5f855dd0fb88')
    principalId: principalId
    principalType: 'ServicePrincipal'
  }
}

// Storage Table Data Contributor on the account: the Functions host writes its diagnostic events to tables
// it creates (AzureFunctionsDiagnosticEvents<yyyyMM>) through AzureWebJobsStorage__tableServiceUri, and
// with an identity-based connection it needs this role to list, create and delete those tables and their
// entities; without it the host logs a 403 (AuthorizationPermissionMismatch) every few minutes and stops
// recording diagnostic events. azure-functions-host pull requests 10438 (identity-based connections for
// diagnostic events) and 10996 (the role named in the code), and the AZFD0003 diagnostic event.
// https://github.com/Azure/azure-functions-host/pull/10438
// https://github.com/Azure/azure-functions-host/pull/10996
// https://learn.microsoft.com/azure/azure-functions/errors-diagnostics/diagnostic-events/azfd0003
resource tableContributor 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(account.id, principalId, '0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3')
  scope: account
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', '0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3')
    principalId: principalId
    principalType: 'ServicePrincipal'
  }
}

@description('Name of the storage account.')
output name string = account.name

@description('Resource id of the storage account, for its private endpoints.')
output id string = account.id

@description('Blob endpoint, with a trailing slash.')
output blobEndpoint string = account.properties.primaryEndpoints.blob

@description('Name of the poison queue, where the host moves a sync request after five failed attempts.')
output poisonQueueName string = poisonQueue.name

@description('Queue endpoint, with a trailing slash.')
output queueEndpoint string = account.properties.primaryEndpoints.queue

@description('Table endpoint, with a trailing slash (AzureWebJobsStorage__tableServiceUri).')
output tableEndpoint string = account.properties.primaryEndpoints.table
