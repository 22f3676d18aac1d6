namespace OdaKvmBackup.Core.Steps;

/// <summary>
/// The folders a run writes into under a destination or retention path may exist already (the &lt;domain&gt;
/// folder of earlier runs). Each must be a real folder of the writer's own (root here, the SSH login on a server)
/// that group and others cannot write: whoever else can write there could swap a copy, a manifest, or the folder
/// itself for a link to elsewhere. Checked in the preflight, so the run stops before its snapshot.
/// </summary>
internal static class OwnFolders
{
    /// <summary>Adds a problem to <paramref name="context"/> for each folder (relative to the store) that exists and
    /// is not safe to write into; folders that do not exist are fine (the run makes them, 0700).</summary>
    public static async Task CheckAsync(IBackupStore store, IEnumerable<string> relativeFolders, PreflightContext context, CancellationToken ct)
    {
        uint? writer = null;
        foreach (var folder in relativeFolders)
        {
            if (await store.GetOwnershipAsync(folder, ct).ConfigureAwait(false) is not { } found)
                continue;
            writer ??= await store.GetWriterIdAsync(ct).ConfigureAwait(false);
            if (Problem(store, folder, found, writer.Value) is { } problem)
                context.Problems.Add(new BackupException(ErrorIds.UnsafeDestinationFolder, BackupErrorCategory.SecurityError,
                    problem.Message, problem.Fix, context.DomainName));
        }
    }

    private static (string Message, string Fix)? Problem(IBackupStore store, string folder, StoreOwnership found, uint writer)
    {
        var where = store.Describe(folder);
        var on = store.IsRemote ? $" (on the server, as {(writer == 0 ? "root" : $"uid {writer}")})" : "";
        if (found.IsSymbolicLink || !found.IsFolder)
        {
            return ($"'{where}', where the backup writes, is {(found.IsSymbolicLink ? "a symbolic link" : "a file")}, not a folder: the backup would be written wherever it points, or fail. Nothing was changed.",
                $"Look{on} at what it is and who made it; move it away (the backup then creates its own folder, 0700), or choose another destination.");
        }
        var groupOrOthers = found.Mode & (UnixFileMode.GroupWrite | UnixFileMode.OtherWrite);
        if (found.OwnerId == writer && groupOrOthers == 0)
            return null;
        var why = new List<string>();
        if (found.OwnerId != writer)
            why.Add($"not by uid {writer}, {(store.IsRemote ? "the SSH login the backup writes as" : "root, whom the backup runs as")}");
        if (groupOrOthers != 0)
            why.Add($"writable by {(groupOrOthers == (UnixFileMode.GroupWrite | UnixFileMode.OtherWrite) ? "its group and others" : groupOrOthers == UnixFileMode.GroupWrite ? "its group" : "others")}");
        var mode = Convert.ToString((int)found.Mode, 8).PadLeft(4, '0');
        return ($"The folder '{where}', where the backup writes, is owned by uid {found.OwnerId} with mode {mode} ({string.Join(", ", why)}): whoever else can write to it could replace the backups in it or redirect them. Nothing was changed.",
            $"Check{on} who made it and what it holds. If it is the backups' folder, give it back and close it: chown {writer} '{found.Path}'; chmod 700 '{found.Path}'. Otherwise move it away; the backup then creates its own.");
    }
}
