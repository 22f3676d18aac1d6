namespace OdaKvmBackup.Core.WayBack;

/// <summary>The copy an incremental backup of one disk starts from: the newest Complete set of the same VM at the
/// same destination whose copy of the disk has the same target, format and size, and whose digest list is present
/// and matches the SHA-256 its manifest records. Paths are relative to the store and decided by
/// <see cref="BackupNames"/> from the store's own layout, never taken from a manifest.</summary>
internal sealed record DiskBase(string RunId, string CopyPath, string DigestListPath, BlockDigestList List);

/// <summary>The base found for a disk, or why there is none (the disk is then copied in full; the reason goes to
/// -Verbose and to the manifest's FullBecause).</summary>
internal sealed record BaseChoice(DiskBase? Base, string? WhyNone)
{
    public static BaseChoice None(string why) => new(null, why);
}

/// <summary>
/// Issue 15: chooses the base of each disk of a run. The candidates are the store's own layout: the folders under
/// &lt;destination&gt;/&lt;domain&gt; whose names are run ids older than the run's (so never a '.replaced-' folder, a
/// partial set or a set dated after the run), newest first; a manifest's claims name nothing. A candidate's manifest is
/// read and checked as any (<see cref="CheckedManifest"/>); it must be Complete and of format OdaKvmBackup/3 (earlier
/// sets have no digest lists), hold a copy of the disk with the same Target, Format and size (and virtual size when
/// both are known), whose digest list reads back exactly as its manifest records (<see cref="StoredDigestList"/>) and
/// whose copy is there at its size.
/// </summary>
/// <remarks>
/// The base is the newest Complete set that has a usable copy of THAT disk, not only the newest Complete set: when the
/// newest one's list of a disk was damaged or deleted, an older set's copy still spares the network most of the disk
/// (every block that differs from it is sent, and the new copy is verified whole). Each disk is chosen on its own, so
/// two disks of a run may be based on different sets. Sets that are not Complete or cannot be read are passed over:
/// their copies may be anything. When no set serves, the reason given is that of the newest Complete set (what a user
/// would look at first).
/// </remarks>
internal static class BaseFinder
{
    /// <summary>The format whose sets have digest lists.</summary>
    public const string DigestListFormat = "OdaKvmBackup/3";

    /// <summary>The base for <paramref name="disk"/> of <paramref name="domainName"/> among the sets in
    /// <paramref name="store"/> older than <paramref name="runId"/>. Never throws for what a set holds (an unreadable
    /// or forged set is no base: the reason says so); throws only for the store's own failures (unreachable).</summary>
    /// <remarks>The disk's size is the journal's <see cref="DiskRecord.SizeBytes"/> when the run has it; before the
    /// copy (preflight) it has none, and the size of the disk's own file (<see cref="DiskRecord.Source"/>, a file or a
    /// block device) stands in: that is the size its copy will have.</remarks>
    public static async Task<BaseChoice> FindAsync(IBackupStore store, string domainName, string runId, DiskRecord disk, CancellationToken ct)
    {
        ArgumentNullException.ThrowIfNull(store);
        ArgumentNullException.ThrowIfNull(disk);
        if (!FileSystemPaths.IsPlainName(domainName))
            return BaseChoice.None($"the VM's name {FileSystemPaths.Quote(domainName)} is not a folder name at this destination");
        long size;
        try
        {
            size = disk.SizeBytes ?? SparseCopy.SizeOf(disk.Source);
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            return BaseChoice.None($"the size of {disk.Target}'s file {FileSystemPaths.Quote(disk.Source)} cannot be read ({ex.Message})");
        }

        var candidates = (await store.ListAsync(domainName, ct).ConfigureAwait(false))
            .Where(e => e.IsFolder && BackupNames.TryParseRunId(e.Name, out _) && string.CompareOrdinal(e.Name, runId) < 0)
            .Select(e => e.Name).Distinct(StringComparer.Ordinal).OrderDescending(StringComparer.Ordinal);
        string? firstReason = null;
        var completeSets = 0;
        var untrusted = 0;
        foreach (var candidate in candidates)
        {
            var folder = BackupNames.SetFolder(domainName, candidate);
            CheckedManifest manifest;
            try
            {
                if (await store.GetEntryAsync(BackupNames.ManifestPath(folder), ct).ConfigureAwait(false) is not { IsFolder: false })
                    continue;
                manifest = await BackupSet.LoadAsync(store, folder, ct).ConfigureAwait(false);
            }
            catch (BackupException ex) when (!Stores.Ssh.SftpConnection.IsConnectionProblem(ex))
            {
                untrusted++; // a set that cannot be trusted is no base (Get-KvmBackup reports it)
                continue;
            }
            if (manifest.Manifest.Status != BackupSetStatus.Complete)
                continue;
            completeSets++;
            DiskBase? found;
            string? why;
            try
            {
                (found, why) = await TryBaseAsync(store, folder, manifest.Manifest, disk, size, ct).ConfigureAwait(false);
            }
            catch (BackupException ex) when (!Stores.Ssh.SftpConnection.IsConnectionProblem(ex))
            {
                (found, why) = (null, $"the copy of {disk.Target} in set {candidate} cannot be used: {ex.Message.TrimEnd('.')}");
            }
            if (found is not null)
                return new BaseChoice(found, null);
            firstReason ??= why;
        }
        if (firstReason is null)
            return BaseChoice.None($"no earlier Complete set of {domainName} at this destination"
                + (untrusted == 0 ? "" : $" ({untrusted} set{(untrusted == 1 ? "" : "s")} could not be trusted: Get-KvmBackup names {(untrusted == 1 ? "it" : "them")})"));
        return BaseChoice.None(completeSets > 1 ? $"{firstReason}, and no older Complete set has a usable copy of {disk.Target} either" : firstReason);
    }

    /// <summary>The disk's base in one Complete set, or why that set cannot be it.</summary>
    private static async Task<(DiskBase? Base, string? Why)> TryBaseAsync(IBackupStore store, string folder, BackupManifest manifest,
        DiskRecord disk, long size, CancellationToken ct)
    {
        var set = $"the last Complete set {manifest.RunId}";
        if (manifest.Format != DigestListFormat)
            return (null, $"{set} was written by an earlier version of OdaKvmBackup ({manifest.Format}) and has no digest lists");
        var copy = manifest.Disks.FirstOrDefault(d => d.Target == disk.Target);
        if (copy is null)
            return (null, $"{set} holds no copy of {disk.Target}");
        if (copy.Format != disk.Format)
            return (null, $"{set} holds {disk.Target} as {copy.Format}, not {disk.Format}");
        if (copy.SizeBytes != size)
            return (null, $"{set} holds {disk.Target} at another size ({copy.SizeBytes} bytes; the disk now has {size})");
        if (copy.VirtualSizeBytes is { } was && disk.VirtualSizeBytes is { } now && was != now)
            return (null, $"{set} holds {disk.Target} at another virtual size ({was} bytes; the disk now has {now})");
        if (copy.Digests is null)
            return (null, $"{set} records no digest list for {disk.Target}");
        var copyPath = BackupNames.FileInSet(folder, copy.File);
        var entry = await store.GetEntryAsync(copyPath, ct).ConfigureAwait(false);
        if (entry is null || entry.IsFolder)
            return (null, $"the copy of {disk.Target} in {set} is missing");
        if (entry.Size != size)
            return (null, $"the copy of {disk.Target} in {set} holds {entry.Size} bytes, not the {size} its manifest says");
        var read = await StoredDigestList.ReadAsync(store, folder, copy.File, size, copy.Digests, ct).ConfigureAwait(false);
        if (read.List is null)
            return (null, $"the digest list of {disk.Target} in set {manifest.RunId} cannot be used: {read.Problem}");
        return (new DiskBase(manifest.RunId, copyPath, BackupNames.DigestListInSet(folder, copy.File), read.List), null);
    }
}
