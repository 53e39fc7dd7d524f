// The private layout (main.bicep vnetEnabled): a virtual network whose first subnet carries the function
// app's outbound traffic and whose second holds private endpoints for blob, queue, table and (when there
// is one) Key Vault, each with its private DNS zone linked to the network. Storage and the vault then
// close their public endpoints; the app's inbound HTTP stays public (callers use function keys, and Graph
// change notifications need a public URL).
// Same shape as the azd Flex Consumption quickstarts' vnet.bicep, which covers blob only.
// https://learn.microsoft.com/azure/azure-functions/flex-consumption-how-to#enable-virtual-network-integration

@description('Required. Name of the virtual network.')
param name string

@description('Required. Prefix of the private endpoints\' names (at most 58 characters: a private endpoint\'s name has 64).')
@maxLength(58)
param endpointPrefix string

@description('Required. Azure region.')
param location string

@description('Optional. Tags.')
param tags object = {}

@description('Optional. Address space of the virtual network; change it when it overlaps a network you peer with.')
param addressPrefix string = '10.0.0.0/16'

@description('Optional. Subnet for the function app\'s outbound traffic (delegated to Microsoft.App/environments); each scaled-out instance takes an address, so keep room for maximumInstanceCount.')
param appSubnetPrefix string = '10.0.1.0/24'

@description('Optional. Subnet of the private endpoints.')
param endpointSubnetPrefix string = '10.0.2.0/24'

@description('Required. Resource id of the storage account (blob, queue and table endpoints).')
param storageAccountId string

@description('Optional. Resource id of the Key Vault; empty when there is none (managed-identity-federation).')
param keyVaultId string = ''

@description('Required. Private DNS zone of Key Vault in this cloud (main.bicep keyVaultDnsZoneName).')
param keyVaultDnsZoneName string

var appSubnetName = 'app'
var endpointSubnetName = 'private-endpoints'

resource vnet 'Microsoft.Network/virtualNetworks@2024-05-01' = {
  name: name
  location: location
  tags: tags
  properties: {
    addressSpace: {
      addressPrefixes: [
        addressPrefix
      ]
    }
    subnets: [
      {
        name: appSubnetName
        properties: {
          addressPrefix: appSubnetPrefix
          // Flex Consumption integrates through a subnet delegated to Microsoft.App/environments (not
          // Microsoft.Web/serverFarms as on the other plans).
          // https://learn.microsoft.com/azure/azure-functions/flex-consumption-plan#considerations
          delegations: [
            {
              name: 'flex-consumption'
              properties: {
                serviceName: 'Microsoft.App/environments'
              }
            }
          ]
        }
      }
      {
        name: endpointSubnetName
        properties: {
          addressPrefix: endpointSubnetPrefix
          privateEndpointNetworkPolicies: 'Disabled'
        }
      }
    ]
  }
}

var endpointSubnetId = '${vnet.id}/subnets/${endpointSubnetName}'

// Zone names come from environment(), so that sovereign clouds get theirs (core.usgovcloudapi.net,
// core.chinacloudapi.cn, ...). https://learn.microsoft.com/azure/private-link/private-endpoint-dns
module blobEndpoint 'private-endpoint.bicep' = {
  name: 'pe-blob'
  params: {
    name: '${endpointPrefix}-blob'
    location: location
    tags: tags
    subnetId: endpointSubnetId
    virtualNetworkId: vnet.id
    targetId: storageAccountId
    groupId: 'blob'
    zoneName: 'privatelink.blob.${environment().suffixes.storage}'
  }
}

module queueEndpoint 'private-endpoint.bicep' = {
  name: 'pe-queue'
  params: {
    name: '${endpointPrefix}-queue'
    location: location
    tags: tags
    subnetId: endpointSubnetId
    virtualNetworkId: vnet.id
    targetId: storageAccountId
    groupId: 'queue'
    zoneName: 'privatelink.queue.${environment().suffixes.storage}'
  }
}

// The table endpoint serves the host's diagnostic events (AzureWebJobsStorage__tableServiceUri).
module tableEndpoint 'private-endpoint.bicep' = {
  name: 'pe-table'
  params: {
    name: '${endpointPrefix}-table'
    location: location
    tags: tags
    subnetId: endpointSubnetId
    virtualNetworkId: vnet.id
    targetId: storageAccountId
    groupId: 'table'
    zoneName: 'privatelink.table.${environment().suffixes.storage}'
  }
}

module vaultEndpoint 'private-endpoint.bicep' = if (!empty(keyVaultId)) {
  name: 'pe-vault'
  params: {
    name: '${endpointPrefix}-vault'
    location: location
    tags: tags
    subnetId: endpointSubnetId
    virtualNetworkId: vnet.id
    targetId: keyVaultId
    groupId: 'vault'
    zoneName: keyVaultDnsZoneName
  }
}

@description('Resource id of the subnet the function app integrates with (virtualNetworkSubnetId).')
output appSubnetId string = '${vnet.id}/subnets/${appSubnetName}'

@description('Resource id of the virtual network.')
output id string = vnet.id
