// Built-in cluster-scoped resources, by API group. A resource requested without a namespace that
// is not one of these is taken to span all namespaces (the conservative reading: a cluster-scoped
// custom resource is then treated like `kubectl get <it> -A`).

export const CLUSTER_SCOPED_RESOURCES: Readonly<Record<string, readonly string[]>> = {
  '': ['namespaces', 'nodes', 'persistentvolumes', 'componentstatuses'],
  'rbac.authorization.k8s.io': ['clusterroles', 'clusterrolebindings'],
  'apiextensions.k8s.io': ['customresourcedefinitions'],
  'storage.k8s.io': ['storageclasses', 'csidrivers', 'csinodes', 'volumeattachments', 'volumeattributesclasses'],
  'scheduling.k8s.io': ['priorityclasses'],
  'admissionregistration.k8s.io': [
    'mutatingwebhookconfigurations',
    'validatingwebhookconfigurations',
    'validatingadmissionpolicies',
    'validatingadmissionpolicybindings',
    'mutatingadmissionpolicies',
    'mutatingadmissionpolicybindings',
  ],
  'apiregistration.k8s.io': ['apiservices'],
  'certificates.k8s.io': ['certificatesigningrequests', 'clustertrustbundles'],
  'networking.k8s.io': ['ingressclasses', 'ipaddresses', 'servicecidrs'],
  'node.k8s.io': ['runtimeclasses'],
  'authentication.k8s.io': ['tokenreviews', 'selfsubjectreviews'],
  'authorization.k8s.io': ['subjectaccessreviews', 'selfsubjectaccessreviews', 'selfsubjectrulesreviews'],
  'flowcontrol.apiserver.k8s.io': ['flowschemas', 'prioritylevelconfigurations'],
  'policy': ['podsecuritypolicies'],
  'internal.apiserver.k8s.io': ['storageversions'],
  'resource.k8s.io': ['deviceclasses', 'resourceslices'],
};

const CLUSTER_SCOPED = new Set<string>(
  Object.entries(CLUSTER_SCOPED_RESOURCES).flatMap(([group, resources]) => resources.map((r) => `${group}/${r}`)),
);

/** True for a built-in cluster-scoped resource of `group` ('' for core). */
export function isClusterScoped(group: string, resource: string): boolean {
  return CLUSTER_SCOPED.has(`${group}/${resource}`);
}
