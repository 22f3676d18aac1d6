namespace OdaKvmBackup.Core.Stores;

/// <summary>Opens the store a destination names: <c>[user@]host:path</c> (as scp reads it) is a folder on an SSH
/// server, anything else a local folder or NFS mount.</summary>
internal static class BackupStores
{
    public static bool IsRemote(string location) => SshDestination.IsRemote(location);

    /// <param name="location">An SSH destination, or a local path already resolved by the caller.</param>
    /// <param name="runner">Runs ssh (with the caller's -Verbose output).</param>
    /// <param name="parameterName">The parameter that named the location, for messages ("Destination").</param>
    public static IBackupStore Open(string location, CliWrapProcessRunner runner, string parameterName = "Destination") =>
        SshDestination.IsRemote(location)
            ? new SshBackupStore(new SshClient(SshDestination.Parse(location), runner, runner))
            : new LocalBackupStore(location) { ParameterName = parameterName };
}
