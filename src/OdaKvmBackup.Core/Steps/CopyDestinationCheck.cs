namespace OdaKvmBackup.Core.Steps;

/// <summary>Copy-VmDisk's part of the preflight: the destination, checked for each domain before its snapshot, and
/// with <paramref name="bases"/> the base of each disk's incremental copy, chosen and read back (see <see cref="CopyBases"/>).</summary>
internal sealed class CopyDestinationCheck(IBackupStore store, bool force, CopyBases? bases = null) : IPreflightCheck
{
    public async Task CheckAsync(PreflightContext context, CancellationToken ct)
    {
        var domain = context.DomainName;
        if (!store.IsRemote && context.DiskFolders.FirstOrDefault(f => FileSystemPaths.IsSameOrInside(store.Location, f)) is { } folder)
        {
            context.Problem(ErrorIds.DestinationInsideDiskFolder, BackupErrorCategory.InvalidArgument,
                $"The destination '{store.Location}' is inside '{folder}', the folder of a disk of '{domain}'.",
                "Back up to another folder, best on another file system or host.");
        }
        var set = BackupNames.SetFolder(domain, context.RunId);
        if (!force && await store.GetEntryAsync(set, ct).ConfigureAwait(false) is not null)
            context.Problems.Add(RunErrors.BackupSetExists(domain, store.Describe(set)));
        await OwnFolders.CheckAsync(store, [domain, set], context, ct).ConfigureAwait(false);

        // The copies are sparse, so what they take is at most what the files hold: a fully allocated vdisk holding
        // little data fits where its allocation would not. Only a destination with no room at all is refused; a
        // tight one gets a warning, and a destination that really fills up mid-copy ends the run safely.
        long allocated = 0;
        foreach (var disk in context.Disks)
        {
            var info = await context.ImageInfoAsync(disk.Source, ct).ConfigureAwait(false);
            // A block device reports no allocation: count it whole, and say so.
            var size = info.ActualSize > 0 ? info.ActualSize : SparseCopy.SizeOf(disk.Source);
            if (info.ActualSize == 0)
                context.Warnings.Add($"'{disk.Source}' ({disk.Target} of '{domain}') is a block device: how much of its {FileSystemPaths.FormatBytes(size)} holds data is known only once it is read.");
            allocated += size;
        }
        var free = await store.GetFreeBytesAsync(ct).ConfigureAwait(false);
        if (free < 1L << 20)
        {
            context.Problem(ErrorIds.NotEnoughSpaceAtDestination, BackupErrorCategory.ResourceUnavailable,
                $"Only {FileSystemPaths.FormatBytes(free)} is free at '{store.Location}'; the disks of '{domain}' hold up to {FileSystemPaths.FormatBytes(allocated)}.",
                "Free space there or choose another -Destination.");
            return;
        }
        if (free < allocated)
        {
            context.Warnings.Add($"Only {FileSystemPaths.FormatBytes(free)} is free at '{store.Location}', and the disks of '{domain}' have {FileSystemPaths.FormatBytes(allocated)} allocated. The copies are sparse, so they may fit; if the destination fills up, the set is marked Incomplete and '{domain}' is put back on its own disks.");
        }
        // Last: the other checks are cheap, and a domain they refuse needs no base read back.
        if (bases is not null && context.Problems.Count == 0)
            await bases.PrepareAsync(context, ct).ConfigureAwait(false);
    }

    public async Task<bool> IsRunIdTakenAsync(string domain, string runId, CancellationToken ct) =>
        !force && await store.GetEntryAsync(BackupNames.SetFolder(domain, runId), ct).ConfigureAwait(false) is not null;
}
