// The function app's user-assigned managed identity: it reads the secret, the storage and writes telemetry.

@description('Required. Name of the identity.')
param name string

@description('Required. Azure region.')
param location string

@description('Optional. Tags.')
param tags object = {}

resource identity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {
  name: name
  location: location
  tags: tags
}

@description('Resource id of the identity.')
output id string = identity.id

@description('Client id of the identity (AZURE_CLIENT_ID).')
output clientId string = identity.properties.clientId

@description('Object (principal) id of the identity, for role assignments.')
output principalId string = identity.properties.principalId
