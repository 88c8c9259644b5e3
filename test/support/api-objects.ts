/**
 * Services and EndpointSlices as the API server returns them, for memory and scale
 * measurements through the API path: the same cluster as syntheticCluster (services with 1
 * to 10 endpoints, every tenth a NodePort), with what the real objects carry besides (uids,
 * resourceVersions, creation timestamps, the labels and annotations the controllers set,
 * owner references, managedFields, and on each endpoint its node, zone, target Pod and
 * conditions).
 */

const ZONES = ['zone-a', 'zone-b', 'zone-c'];

function uid(kind: number, i: number): string {
  const h = (kind * 1_000_003 + i).toString(16).padStart(12, '0');
  return `5e1f${h.slice(0, 4)}-0c3a-4d2b-9e7f-${h.slice(-12)}`;
}

/** The raw objects of a cluster of `count` services on `nodes` nodes. */
export function apiCluster(count: number, nodes = 100): { services: object[]; endpointSlices: object[] } {
  const services: object[] = [];
  const endpointSlices: object[] = [];
  let pod = 0;
  const created = '2026-11-30T08:00:00Z';
  for (let i = 0; i < count; i++) {
    const name = `svc-${i}`;
    const nodePort = i % 10 === 5 && i < 27680 ? 30000 + (i - 5) / 10 : undefined;
    const clusterIP = `10.${96 + (i >> 16)}.${(i >> 8) & 255}.${i & 255}`;
    services.push({
      metadata: {
        name,
        namespace: 'default',
        uid: uid(1, i),
        resourceVersion: String(1000 + i),
        creationTimestamp: created,
        labels: { app: name, 'app.kubernetes.io/part-of': 'bench' },
        annotations: {
          'kubectl.kubernetes.io/last-applied-configuration': JSON.stringify({
            apiVersion: 'v1',
            kind: 'Service',
            metadata: { name, namespace: 'default', labels: { app: name } },
            spec: { selector: { app: name }, ports: [{ name: 'http', port: 80, targetPort: 8080 }] },
          }),
        },
        managedFields: [
          {
            manager: 'kubectl-client-side-apply',
            operation: 'Update',
            apiVersion: 'v1',
            time: created,
            fieldsType: 'FieldsV1',
            fieldsV1: {
              'f:metadata': {
                'f:annotations': { '.': {}, 'f:kubectl.kubernetes.io/last-applied-configuration': {} },
                'f:labels': { '.': {}, 'f:app': {} },
              },
              'f:spec': {
                'f:internalTrafficPolicy': {},
                'f:ports': {
                  '.': {},
                  'k:{"port":80,"protocol":"TCP"}': {
                    '.': {},
                    'f:name': {},
                    'f:port': {},
                    'f:protocol': {},
                    'f:targetPort': {},
                  },
                },
                'f:selector': {},
                'f:sessionAffinity': {},
                'f:type': {},
              },
            },
          },
        ],
      },
      spec: {
        type: nodePort ? 'NodePort' : 'ClusterIP',
        clusterIP,
        clusterIPs: [clusterIP],
        ipFamilies: ['IPv4'],
        ipFamilyPolicy: 'SingleStack',
        internalTrafficPolicy: 'Cluster',
        ...(nodePort ? { externalTrafficPolicy: 'Cluster' } : {}),
        sessionAffinity: 'None',
        selector: { app: name },
        ports: [
          { name: 'http', protocol: 'TCP', port: 80, targetPort: 8080, ...(nodePort ? { nodePort } : {}) },
        ],
      },
      status: { loadBalancer: {} },
    });
    const endpoints = Array.from({ length: 1 + (i % 10) }, () => {
      pod++;
      const node = pod % nodes;
      return {
        addresses: [`10.${128 + (pod >> 16)}.${(pod >> 8) & 255}.${pod & 255}`],
        conditions: { ready: true, serving: true, terminating: false },
        nodeName: `node-${node}`,
        zone: ZONES[node % ZONES.length],
        targetRef: {
          kind: 'Pod',
          namespace: 'default',
          name: `${name}-7d9f8c6b5-${pod.toString(36).padStart(5, 'x')}`,
          uid: uid(3, pod),
        },
      };
    });
    endpointSlices.push({
      metadata: {
        name: `${name}-${(i * 7919).toString(36).slice(-5).padStart(5, 'a')}`,
        generateName: `${name}-`,
        namespace: 'default',
        uid: uid(2, i),
        resourceVersion: String(100000 + i),
        generation: 1,
        creationTimestamp: created,
        labels: {
          'endpointslice.kubernetes.io/managed-by': 'endpointslice-controller.k8s.io',
          'kubernetes.io/service-name': name,
          app: name,
        },
        annotations: { 'endpoints.kubernetes.io/last-change-trigger-time': created },
        ownerReferences: [
          {
            apiVersion: 'v1',
            kind: 'Service',
            name,
            uid: uid(1, i),
            controller: true,
            blockOwnerDeletion: true,
          },
        ],
        managedFields: [
          {
            manager: 'kube-controller-manager',
            operation: 'Update',
            apiVersion: 'discovery.k8s.io/v1',
            time: created,
            fieldsType: 'FieldsV1',
            fieldsV1: {
              'f:addressType': {},
              'f:endpoints': {},
              'f:metadata': {
                'f:annotations': {},
                'f:generateName': {},
                'f:labels': {},
                'f:ownerReferences': {},
              },
              'f:ports': {},
            },
          },
        ],
      },
      addressType: 'IPv4',
      ports: [{ name: 'http', protocol: 'TCP', port: 8080 }],
      endpoints,
    });
  }
  return { services, endpointSlices };
}
