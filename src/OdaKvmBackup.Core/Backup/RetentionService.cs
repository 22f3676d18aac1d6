using OdaKvmBackup.Core.Libvirt;

namespace OdaKvmBackup.Core.Backup;

/// <summary>Step 6: moves overlays that no disk uses any more into the retention folder.</summary>
public sealed class RetentionService
{
    private readonly VirshClient _virsh;

    public RetentionService(VirshClient virsh) => _virsh = virsh;

    /// <summary>The retention path the overlay would get: &lt;Path&gt;/&lt;domain&gt;/&lt;run&gt;/&lt;file&gt;.</summary>
    public static string RetainedPath(string retentionPath, string domain, string runId, string overlay) =>
        Path.Combine(retentionPath, domain, runId, Path.GetFileName(overlay));

    /// <summary>Throws OverlayInUse when any disk of any domain on the host still has the file in its chain.</summary>
    public async Task RequireNotInUseAsync(string overlay, CancellationToken ct)
    {
        var wanted = FileSystemPaths.Normalize(overlay);
        foreach (var domain in await _virsh.ListAllDomainsAsync(ct).ConfigureAwait(false))
        {
            var state = await _virsh.GetStateAsync(domain, ct).ConfigureAwait(false);
            var definitions = new List<DomainDescription> { DomainXml.Parse(await _virsh.DumpXmlAsync(domain, inactive: true, ct).ConfigureAwait(false)) };
            if (state is not ("shut off" or "crashed"))
                definitions.Add(DomainXml.Parse(await _virsh.DumpXmlAsync(domain, inactive: false, ct).ConfigureAwait(false)));
            foreach (var disk in definitions.SelectMany(d => d.Disks))
            {
                var chain = new[] { disk.Source }.Concat(disk.BackingChain);
                if (chain.Any(p => p is not null && FileSystemPaths.Normalize(p) == wanted))
                {
                    throw new BackupException(ErrorIds.OverlayInUse, BackupErrorCategory.ResourceBusy,
                        $"'{overlay}' is still in the backing chain of disk {disk.Target} of '{domain}'; it was not moved.",
                        $"Commit it first: pipe the backup objects through Invoke-BlockCommit, or run Repair-KvmBackup -DomainName {domain}.", domain);
                }
            }
        }
    }

    /// <summary>Deletes the overlay of a run that failed or was repaired: its data is in the disk already, and a
    /// leftover overlay would block the next snapshot. Only once no disk has it in its chain.</summary>
    public async Task DiscardAsync(string overlay, CancellationToken ct)
    {
        await RequireNotInUseAsync(overlay, ct).ConfigureAwait(false);
        File.Delete(overlay);
    }

    public async Task<string> MoveAsync(string domain, string runId, string overlay, string retentionPath, CancellationToken ct)
    {
        await RequireNotInUseAsync(overlay, ct).ConfigureAwait(false);
        var target = RetainedPath(retentionPath, domain, runId, overlay);
        if (File.Exists(target))
        {
            throw new BackupException(ErrorIds.RetainedOverlayExists, BackupErrorCategory.ResourceExists,
                $"'{target}' already exists; the overlay '{overlay}' was left where it is.", "Move or delete the older file first.", domain);
        }
        Directory.CreateDirectory(Path.GetDirectoryName(target)!);
        File.Move(overlay, target);
        return target;
    }
}
