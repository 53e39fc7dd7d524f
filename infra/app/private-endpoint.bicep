// One private endpoint with everything its name needs to resolve inside the network: the private DNS
// zone, the zone's link to the virtual network, and the endpoint's DNS zone group (which writes and
// removes the endpoint's A record in the zone).
// https://learn.microsoft.com/azure/private-link/private-endpoint-dns

@description('Required. Name of the private endpoint.')
param name string

@description('Required. Azure region of the endpoint (the zone and its link are global).')
param location string

@description('Optional. Tags.')
param tags object = {}

@description('Required. Resource id of the subnet the endpoint takes its address from.')
param subnetId string

@description('Required. Resource id of the virtual network the zone is linked to.')
param virtualNetworkId string

@description('Required. Resource id of the storage account or vault the endpoint connects to.')
param targetId string

@description('Required. Sub-resource of the target: blob, queue, table or vault.')
@allowed(['blob', 'queue', 'table', 'vault'])
param groupId string

@description('Required. Private DNS zone of that sub-resource in this cloud, e.g. privatelink.blob.<environment().suffixes.storage>.')
param zoneName string

resource zone 'Microsoft.Network/privateDnsZones@2020-06-01' = {
  name: zoneName
  location: 'global'
  tags: tags
}

// Without the link, the network's resolver never consults the zone and the service's public name keeps
// resolving to its (closed) public address.
resource zoneLink 'Microsoft.Network/privateDnsZones/virtualNetworkLinks@2020-06-01' = {
  parent: zone
  name: 'link-${name}'
  location: 'global'
  tags: tags
  properties: {
    registrationEnabled: false
    virtualNetwork: {
      id: virtualNetworkId
    }
  }
}

resource endpoint 'Microsoft.Network/privateEndpoints@2024-05-01' = {
  name: name
  location: location
  tags: tags
  properties: {
    subnet: {
      id: subnetId
    }
    privateLinkServiceConnections: [
      {
        name: groupId
        properties: {
          privateLinkServiceId: targetId
          groupIds: [
            groupId
          ]
        }
      }
    ]
  }
}

resource zoneGroup 'Microsoft.Network/privateEndpoints/privateDnsZoneGroups@2024-05-01' = {
  parent: endpoint
  name: 'default'
  properties: {
    privateDnsZoneConfigs: [
      {
        name: groupId
        properties: {
          privateDnsZoneId: zone.id
        }
      }
    ]
  }
}

@description('Resource id of the private endpoint.')
output id string = endpoint.id

@description('Resource id of the private DNS zone.')
output zoneId string = zone.id
