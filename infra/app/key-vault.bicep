// Key Vault for the Graph client secret: RBAC only, soft delete and purge protection.
// The secret itself is set after deployment (docs/deploy.md), never passed to this template.

@description('Required. Key Vault name (3-24 letters, digits and dashes).')
param name string

@description('Required. Azure region.')
param location string

@description('Optional. Tags.')
param tags object = {}

@description('Required. Principal id that reads the secret (the function app identity).')
param readerPrincipalId string

@description('Optional. Principal id that may set the secret (the deployer); empty for none.')
param deployerPrincipalId string = ''

@description('Optional. Also grant the deployer Key Vault Certificates Officer, to create or import the client certificate.')
param deployerManagesCertificates bool = false

@description('Optional. Private layout (main.bicep vnetEnabled): public network access off and the firewall denying by default, reached through a private endpoint. False: the public endpoint, open to any network, an Entra token and a data-plane role still required.')
param vnetEnabled bool = true

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' = {
  name: name
  location: location
  tags: tags
  properties: {
    // checkov:skip=CKV_AZURE_109:defaultAction is Deny when vnetEnabled is true (the default) and Allow when false (no VNet: the app has no fixed outbound address to allow); checkov cannot evaluate the vnetEnabled condition, and tests/unit/test_templates.py checks both layouts.
    // checkov:skip=CKV_AZURE_189:publicNetworkAccess is Disabled when vnetEnabled is true (the default) and Enabled when false; checkov cannot evaluate the vnetEnabled condition (its check fails on the expression), and tests/unit/test_templates.py checks both layouts.
    tenantId: subscription().tenantId
    sku: {
      family: 'A'
      name: 'standard'
    }
    enableRbacAuthorization: true
    enableSoftDelete: true
    softDeleteRetentionInDays: 90
    // Purge protection cannot be turned off again, and a deleted vault keeps its name for the
    // retention period (main.bicep keyVaultSeed gives a redeployment a new name).
    // https://learn.microsoft.com/azure/key-vault/general/soft-delete-overview#purge-protection
    enablePurgeProtection: true
    // Private layout: no public endpoint, Deny by default underneath (the postprovision hook's brief
    // opening then admits its one IP rule only) and no trusted-service bypass. Public layout: open to
    // any network, as Flex Consumption has no fixed outbound addresses.
    // https://learn.microsoft.com/azure/key-vault/general/network-security
    publicNetworkAccess: vnetEnabled ? 'Disabled' : 'Enabled'
    networkAcls: {
      bypass: 'None'
      defaultAction: vnetEnabled ? 'Deny' : 'Allow'
      // None, so that each deployment also removes a rule left by a temporary opening (docs/deploy.md).
      ipRules: []
    }
  }
}

// Key Vault Secrets User: read secret values, nothing else.
resource secretsUser 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(vault.id, readerPrincipalId, '4633458b-17de-408a-b874-0445c86b69e6')
  scope: vault
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', '4633458b-17de-408a-b874-0445c86b69e6')
    principalId: readerPrincipalId
    principalType: 'ServicePrincipal'
  }
}

// Key Vault Secrets Officer for the deployer, so they can store and rotate the client secret.
resource secretsOfficer 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (!empty(deployerPrincipalId)) {
  name: guid(vault.id, deployerPrincipalId, 'b86a8fe4-44ce-4948-aee5-eccb2c155cd7')
  scope: vault
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', 'b86a8fe4-44ce-4948-aee5-eccb2c155cd7')
    principalId: deployerPrincipalId
  }
}

// Key Vault Certificates Officer for the deployer with certificate credentials: creating or importing a
// certificate needs it (Secrets Officer does not cover certificates).
// https://learn.microsoft.com/azure/key-vault/general/rbac-guide#azure-built-in-roles-for-key-vault-data-plane-operations
resource certificatesOfficer 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (deployerManagesCertificates && !empty(deployerPrincipalId)) {
  name: guid(vault.id, deployerPrincipalId, 'a4417e6f-fecd-4de8-b567-7b0420556985')
  scope: vault
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', 'a4417e6f-fecd-4de8-b567-7b0420556985')
    principalId: deployerPrincipalId
  }
}

@description('Name of the vault.')
output name string = vault.name

@description('Resource id of the vault, for its private endpoint.')
output id string = vault.id

@description('Vault URI (KEY_VAULT_URL).')
output uri string = vault.properties.vaultUri
