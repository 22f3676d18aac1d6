namespace OdaKvmBackup.Core.Tests.Support;

/// <summary>What the copy engine returns for a copy of a file of zeros, for tests of the run's record keeping.</summary>
internal static class CopyResults
{
    public static CopyResult Of(long size, long dataBytes, long sent = -1, long resent = 0)
    {
        using var builder = new BlockDigestListBuilder(size, twoThreads: false);
        return new CopyResult(size, dataBytes, builder.Complete(), size, sent < 0 ? dataBytes : sent, resent);
    }
}
