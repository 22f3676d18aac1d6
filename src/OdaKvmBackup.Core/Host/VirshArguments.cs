using System.Globalization;

namespace OdaKvmBackup.Core.Host;

/// <summary>An overlay to create for one disk.</summary>
internal sealed record DiskSpec(string Target, string OverlayPath);

/// <summary>
/// Argument arrays for virsh. Every value goes after its option name (--domain X, --path vda) so that a name
/// starting with '-' is never read as an option; there is no shell, so quotes, ';' and $(...) stay plain text.
/// </summary>
internal static class VirshArguments
{
    public static string[] DumpXml(string domain, bool inactive) =>
        inactive ? ["dumpxml", "--domain", domain, "--inactive"] : ["dumpxml", "--domain", domain];

    public static string[] DomState(string domain) => ["domstate", "--domain", domain];

    public static string[] ListAllDomains() => ["list", "--all", "--name"];

    public static string[] ListRunningDomains() => ["list", "--name"];

    public static string[] ListSnapshotNames(string domain) => ["snapshot-list", "--domain", domain, "--name"];

    public static string[] AgentPing(string domain) =>
        ["qemu-agent-command", "--domain", domain, "--cmd", "{\"execute\":\"guest-ping\"}"];

    public static string[] SnapshotCreate(string domain, string snapshotName, bool quiesce,
        IEnumerable<DiskSpec> overlays, IEnumerable<string> excludedTargets)
    {
        var args = new List<string> { "snapshot-create-as", "--domain", domain, "--name", snapshotName, "--disk-only", "--atomic" };
        if (quiesce)
            args.Add("--quiesce");
        foreach (var spec in overlays)
        {
            args.Add("--diskspec");
            args.Add(spec.Target + ",snapshot=external,file=" + EscapeDiskSpecValue(spec.OverlayPath));
        }
        foreach (var target in excludedTargets)
        {
            args.Add("--diskspec");
            args.Add(target + ",snapshot=no");
        }
        return args.ToArray();
    }

    public static string[] SnapshotDeleteMetadata(string domain, string snapshotName) =>
        ["snapshot-delete", "--domain", domain, "--snapshotname", snapshotName, "--metadata"];

    /// <summary>--base names the disk's own file: without it libvirt merges the whole chain into its bottom image,
    /// which for a disk whose own file has a backing file (a template) would be the wrong file.</summary>
    public static string[] BlockCommitActivePivot(string domain, string target, string baseFile, int bandwidthMiBps)
    {
        var args = new List<string> { "blockcommit", "--domain", domain, "--path", target, "--active", "--verbose", "--pivot", "--base", baseFile };
        if (bandwidthMiBps > 0)
        {
            args.Add("--bandwidth");
            args.Add(bandwidthMiBps.ToString(CultureInfo.InvariantCulture));
        }
        return args.ToArray();
    }

    public static string[] BlockJobInfoRaw(string domain, string target) => ["blockjob", "--domain", domain, "--path", target, "--info", "--raw"];

    public static string[] BlockJobPivot(string domain, string target) => ["blockjob", "--domain", domain, "--path", target, "--pivot"];

    public static string[] BlockJobSetBandwidth(string domain, string target, int bandwidthMiBps) =>
        ["blockjob", "--domain", domain, "--path", target, "--bandwidth", bandwidthMiBps.ToString(CultureInfo.InvariantCulture)];

    public static string[] BlockJobAbort(string domain, string target) => ["blockjob", "--domain", domain, "--path", target, "--abort"];

    public static string[] Define(string xmlFile) => ["define", "--file", xmlFile];

    /// <summary>A transient domain: started at once, and gone from libvirt once it is destroyed.</summary>
    public static string[] CreateTransient(string xmlFile) => ["create", "--file", xmlFile];

    public static string[] Start(string domain) => ["start", "--domain", domain];

    public static string[] Destroy(string domain) => ["destroy", "--domain", domain];

    /// <summary>guest-ping that waits at most <paramref name="seconds"/> for the agent's answer.</summary>
    public static string[] AgentPing(string domain, int seconds) =>
        ["qemu-agent-command", "--domain", domain, "--timeout", seconds.ToString(CultureInfo.InvariantCulture), "--cmd", "{\"execute\":\"guest-ping\"}"];

    /// <summary>What the host runs a domain of this virt type, arch and machine with (its emulator, its firmware);
    /// an arch or machine left out is the host's default.</summary>
    public static string[] DomainCapabilities(string virtType, string? arch, string? machine)
    {
        var args = new List<string> { "domcapabilities", "--virttype", virtType };
        if (arch is not null)
            args.AddRange(["--arch", arch]);
        if (machine is not null)
            args.AddRange(["--machine", machine]);
        return args.ToArray();
    }

    /// <summary>virsh splits --diskspec on commas; a literal comma is written twice.</summary>
    public static string EscapeDiskSpecValue(string value) => value.Replace(",", ",,", StringComparison.Ordinal);
}
