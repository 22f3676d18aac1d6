namespace OdaKvmBackup.Core.Steps;

/// <summary>Step 6: moves overlays that no disk uses any more into the retention folder. A file that is still in
/// any disk's backing chain is never moved or deleted.</summary>
internal sealed class RetentionService
{
    private readonly VirshClient _virsh;

    public RetentionService(VirshClient virsh) => _virsh = virsh;

    /// <summary>Throws OverlayInUse when any disk of any domain on the host still has the file in its chain.</summary>
    public async Task RequireNotInUseAsync(string overlay, CancellationToken ct)
    {
        var wanted = FileSystemPaths.Normalize(overlay);
        foreach (var (domain, disks) in await DisksOfAllDomainsAsync(null, ct).ConfigureAwait(false))
            RequireNotIn(wanted, overlay, domain, disks);
    }

    /// <summary>The check for one domain: its saved definition and its live one.</summary>
    public async Task RequireNotInChainsOfAsync(string overlay, string domain, CancellationToken ct) =>
        RequireNotIn(FileSystemPaths.Normalize(overlay), overlay, domain, await DefinedDisksAsync(domain, ct).ConfigureAwait(false));

    private static void RequireNotIn(string wanted, string overlay, string domain, IEnumerable<VmDisk> disks)
    {
        foreach (var disk in disks)
        {
            if (ChainFiles(disk).Contains(wanted))
            {
                throw new BackupException(ErrorIds.OverlayInUse, BackupErrorCategory.ResourceBusy,
                    $"'{overlay}' is still in the backing chain of disk {disk.Target} of '{domain}'; it was not moved.",
                    $"Commit it first: pipe the backup objects through Invoke-BlockCommit, or run Repair-KvmBackup -DomainName {domain}.", domain);
            }
        }
    }

    /// <summary>The chain files of every domain but one, read once per batch (see <see cref="MoveAsync"/>).</summary>
    public async Task<IReadOnlySet<string>> FilesInChainsOfOtherDomainsAsync(string exceptDomain, CancellationToken ct)
    {
        var files = new HashSet<string>(StringComparer.Ordinal);
        foreach (var (_, disks) in await DisksOfAllDomainsAsync(exceptDomain, ct).ConfigureAwait(false))
            files.UnionWith(disks.SelectMany(ChainFiles));
        return files;
    }

    /// <summary>
    /// The disks of every domain on the host (but one), saved and live definitions, read all at once: each virsh call
    /// waits mostly on its own start-up, so reading them together takes about as long as reading one. A domain that
    /// vanished between the listing and its reading (undefined, renamed) makes the whole listing read again, so a
    /// renamed domain is read under its new name.
    /// </summary>
    private async Task<List<(string Domain, List<VmDisk> Disks)>> DisksOfAllDomainsAsync(string? exceptDomain, CancellationToken ct)
    {
        for (var attempt = 1; ; attempt++)
        {
            var domains = (await _virsh.ListAllDomainsAsync(ct).ConfigureAwait(false)).Where(d => d != exceptDomain).ToList();
            try
            {
                var found = new (string, List<VmDisk>)[domains.Count];
                // Bounded: a host with fifty VMs does not start a hundred virsh at once.
                await Parallel.ForEachAsync(Enumerable.Range(0, domains.Count), new ParallelOptions { MaxDegreeOfParallelism = 6, CancellationToken = ct },
                    async (i, token) => found[i] = (domains[i], (await DefinedDisksAsync(domains[i], token).ConfigureAwait(false)).ToList()))
                    .ConfigureAwait(false);
                return found.ToList();
            }
            catch (BackupException ex) when (ex.ErrorId == ErrorIds.DomainNotFound && attempt < 3)
            {
            }
        }
    }

    /// <summary>A domain's disks in its saved definition and its live one, read together (the live one of a domain
    /// that is shut off is its saved one: no need to ask for its state first).</summary>
    private async Task<IEnumerable<VmDisk>> DefinedDisksAsync(string domain, CancellationToken ct)
    {
        var saved = _virsh.DumpXmlAsync(domain, inactive: true, ct);
        var live = _virsh.DumpXmlAsync(domain, inactive: false, ct);
        await Task.WhenAll(saved, live).ConfigureAwait(false);
        return DomainXml.Parse(saved.Result).Disks.Concat(DomainXml.Parse(live.Result).Disks);
    }

    /// <summary>A disk's file and every image below it, normalized for comparison.</summary>
    private static IEnumerable<string> ChainFiles(VmDisk disk) =>
        new[] { disk.Source }.Concat(disk.BackingChain).OfType<string>().Select(FileSystemPaths.Normalize);

    /// <summary>Deletes the overlay of a run that failed or was repaired: its data is in the disk already, and a
    /// leftover overlay would block the next snapshot. Only once no disk has it in its chain.</summary>
    public async Task DiscardAsync(string overlay, CancellationToken ct)
    {
        await RequireNotInUseAsync(overlay, ct).ConfigureAwait(false);
        PrivateFiles.Delete(overlay);
    }

    /// <summary>Moves an overlay to &lt;retention&gt;/&lt;folder&gt;/&lt;name&gt; (folder and name from
    /// <see cref="BackupNames"/>), once no chain holds it; never over an existing file. <paramref name="otherDomainsChains"/>,
    /// when given, is what the other domains' chains held at the start of the batch; the owning domain is always read afresh.</summary>
    public async Task<string> MoveAsync(string domain, string overlay, string retentionPath, string folder, string name, CancellationToken ct,
        IReadOnlySet<string>? otherDomainsChains = null)
    {
        if (otherDomainsChains is null)
        {
            await RequireNotInUseAsync(overlay, ct).ConfigureAwait(false);
        }
        else
        {
            await RequireNotInChainsOfAsync(overlay, domain, ct).ConfigureAwait(false);
            if (otherDomainsChains.Contains(FileSystemPaths.Normalize(overlay)))
            {
                throw new BackupException(ErrorIds.OverlayInUse, BackupErrorCategory.ResourceBusy,
                    $"'{overlay}' is in the backing chain of another domain than '{domain}'; it was not moved.",
                    "Find it with 'virsh domblklist <domain> --details' on each domain before moving it by hand.", domain);
            }
        }
        var targetFolder = BackupNames.RetentionFolderPath(retentionPath, folder);
        var target = BackupNames.RetainedPath(retentionPath, folder, name);
        if (File.Exists(target))
        {
            throw new BackupException(ErrorIds.RetainedOverlayExists, BackupErrorCategory.ResourceExists,
                $"'{target}' already exists; the overlay '{overlay}' was left where it is.", "Move or delete the older file first.", domain);
        }
        try
        {
            PrivateFiles.CreateFolder(targetFolder);
            File.Move(overlay, target, overwrite: false);
            File.SetUnixFileMode(target, PrivateFiles.FileMode);
            PrivateFiles.FsyncDirectory(targetFolder);
            PrivateFiles.FsyncDirectory(Path.GetDirectoryName(overlay)!);
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            throw Stores.StoreErrors.FromIOException(ex, target);
        }
        return target;
    }
}
